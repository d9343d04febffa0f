// Built by `inv zlib-repro` once protobuf's BUILD names @zlib_archive: it uses protobuf and, through
// protobuf's GzipOutputStream, the zlib that @zlib_archive provides.
#include <zlib.h>

#include <iostream>
#include <string>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/io/gzip_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/stubs/common.h"

int main() {
  using google::protobuf::FileDescriptorProto;
  namespace io = google::protobuf::io;

  FileDescriptorProto file;  // descriptor.proto, as compiled into protobuf
  FileDescriptorProto::descriptor()->file()->CopyTo(&file);
  std::string compressed;
  {
    io::StringOutputStream out(&compressed);
    io::GzipOutputStream gzip(&out);
    if (!file.SerializeToZeroCopyStream(&gzip) || !gzip.Close()) return 1;
  }
  FileDescriptorProto back;
  io::ArrayInputStream in(compressed.data(), static_cast<int>(compressed.size()));
  io::GzipInputStream gunzip(&in);
  if (!back.ParseFromZeroCopyStream(&gunzip) || back.SerializeAsString() != file.SerializeAsString()) {
    std::cerr << "the message did not survive the gzip round trip" << std::endl;
    return 1;
  }
  std::cout << "protobuf " << google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION)
            << " with zlib " << zlibVersion() << ": " << file.name() << " (" << file.ByteSizeLong()
            << " bytes) gzipped to " << compressed.size() << " bytes and read back" << std::endl;
  return 0;
}
