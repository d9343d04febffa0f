"""Image and source builds: the devel and pyserving images, TF Serving's Bazel build in Docker,
and the protobuf @zlib patch."""
