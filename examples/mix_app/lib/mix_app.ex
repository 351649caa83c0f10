defmodule MixApp do
  @moduledoc """
  A mix application that uses Barrel as a dependency.

  The `:barrel` application starts with this one (it is a dependency), and
  opens its store in the `data_dir` set in `config/config.exs`. Run it with:

      mix run -e MixApp.run
  """

  @barrel "mix_app"

  @doc """
  Creates the `"mix_app"` barrel unless it exists, saves a greeting, fetches
  it back, prints it and returns it.
  """
  @spec run() :: {:ok, Barrel.doc()} | {:error, Barrel.reason()}
  def run do
    with :ok <- create_once(@barrel),
         {:ok, barrel} <- Barrel.open(@barrel) do
      result = greet(barrel)
      :ok = Barrel.close(barrel)
      result
    end
  end

  defp greet(barrel) do
    greeting = %{"greeting" => "hello", "from" => "mix_app", "reply" => nil}

    with {:ok, id, _rev} <- Barrel.save_doc(barrel, greeting),
         {:ok, doc} <- Barrel.fetch_doc(barrel, id) do
      IO.puts("saved and fetched #{inspect(doc)}")
      {:ok, doc}
    end
  end

  # The store outlives the VM: the barrel exists from the second run on.
  defp create_once(name) do
    case Barrel.create_barrel(name) do
      :ok -> :ok
      {:error, :already_exists} -> :ok
      error -> error
    end
  end
end
