defmodule MixApp.MixProject do
  use Mix.Project

  def project do
    [
      app: :mix_app,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # Barrel by path: its mix.exs builds the NIF with cargo, no hex needed.
      deps: [{:barrel, path: "../.."}]
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end
