# Used by `mix format` (and `make lint` / `.ci/run`, which check it).
[
  inputs: ["{mix,.formatter}.exs", "{config,lib,test}/**/*.{ex,exs}"]
]
