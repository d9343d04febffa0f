"""The kit's main job: data, training, querying the served models, and `inv reproduce`'s step list."""
