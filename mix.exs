defmodule Mix.Tasks.Compile.BarrelNif do
  @moduledoc false
  # Builds the Rust NIF with cargo (native/build-nif.sh) into priv/barrel_nif.so.
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    root = Path.dirname(__ENV__.file)

    case System.cmd("sh", [Path.join(root, "native/build-nif.sh")],
           stderr_to_stdout: true,
           into: IO.stream(:stdio, :line)
         ) do
      {_, 0} -> {:ok, []}
      {_, status} -> Mix.raise("building the barrel NIF failed (exit #{status})")
    end
  end
end

defmodule Barrel.MixProject do
  use Mix.Project

  def project do
    [
      app: :barrel,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:barrel_nif] ++ Mix.compilers(),
      erlc_paths: ["src"],
      elixirc_paths: ["lib"],
      erlc_options: [:debug_info],
      start_permanent: Mix.env() == :prod,
      deps: [],
      aliases: [test: "test --no-start"],
      docs: [main: "Barrel"]
    ]
  end

  def application do
    [
      mod: {:barrel_app, []},
      registered: [:barrel_sup],
      env: [data_dir: ~c"barrel_data"],
      extra_applications: []
    ]
  end
end
