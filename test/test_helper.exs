# `mix test` runs with --no-start (see the alias in mix.exs) so that the store
# opens in a fresh directory of its own, never in the default data dir.
data_dir = Path.join(System.tmp_dir!(), "barrel-test-#{System.os_time()}-#{System.pid()}")
File.mkdir_p!(data_dir)

:ok =
  case Application.load(:barrel) do
    :ok -> :ok
    {:error, {:already_loaded, :barrel}} -> :ok
  end

Application.put_env(:barrel, :data_dir, data_dir)
{:ok, _} = Application.ensure_all_started(:barrel)

ExUnit.after_suite(fn _results ->
  # Stopping logs a notice that would end every run.
  Logger.configure(level: :warning)
  Application.stop(:barrel)
  File.rm_rf!(data_dir)
end)

defmodule Barrel.Case do
  @moduledoc """
  Tests that work in a barrel of their own: the context has `:name` and an
  open `:barrel`.
  """
  use ExUnit.CaseTemplate

  using do
    quote do
      import Barrel.Case
    end
  end

  setup do
    name = unique_name()
    :ok = Barrel.create_barrel(name)
    {:ok, barrel} = Barrel.open(name)
    %{name: name, barrel: barrel}
  end

  @doc "A barrel name no other test uses."
  def unique_name, do: "test-#{System.unique_integer([:positive, :monotonic])}"

  @doc "Saves `doc`, which must succeed, and returns its revision."
  def save!(barrel, doc, opts \\ []) do
    {:ok, _id, rev} = Barrel.save_doc(barrel, doc, opts)
    rev
  end

  @doc "The ids `Barrel.fold_docs/4` visits with `opts`, in order."
  def fold_ids(barrel, opts \\ []) do
    {:ok, ids} = Barrel.fold_docs(barrel, fn doc, ids -> {:ok, [doc["id"] | ids]} end, [], opts)
    Enum.reverse(ids)
  end
end

ExUnit.start()
