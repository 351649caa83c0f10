import Config

# The store lives in the build directory of this example (one per MIX_ENV),
# not in the current directory.
config :barrel, data_dir: Path.expand("../_build/#{config_env()}/barrel_data", __DIR__)
