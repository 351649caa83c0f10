defmodule Barrel.Listener do
  @moduledoc """
  A listener in a supervision tree of your own.

  A listener hears the changes of a barrel that match its patterns and sends
  them to a process or passes them to a function; `Barrel.start_listener/2`
  describes what it does and its options. `Barrel.start_listener/2` starts
  one under the `:barrel` application, tied to the process that asks for it;
  `Barrel.Listener` starts one linked to your supervisor, so that it starts,
  restarts and stops with your application.

  The options are those of `Barrel.start_listener/2`, plus:

    * `barrel: barrel | name` (required): a handle or a barrel name. With a
      name, each start opens a handle of its own.
    * `id: term` (default `Barrel.Listener`): the child id, to tell several
      listeners of one supervisor apart.

  One of `:to` and `:callback_fun` is required: the process that starts the
  listener is the supervisor, which is no place for changes. A registered
  process is reached with a function, such as
  `callback_fun: &send(MyApp.Orders, {:order_changed, &1})`.

  A listener that crashes is restarted (`restart: :transient`) with the
  options it was given: with `since: :now` it hears the changes made from its
  new start on, with `since: seq` it replays the feed after `seq` again. One
  that stops normally, with `Barrel.stop_listener/1`, because its `:to`
  process exited or because its barrel was deleted, is not restarted. To
  restart it with the process it feeds, put it after that process in a
  `:rest_for_one` supervisor:

      children = [
        MyApp.Orders,
        {Barrel.Listener,
         barrel: "shop",
         subscribe_to: ["/type/order"],
         callback_fun: &GenServer.cast(MyApp.Orders, {:order_changed, &1})}
      ]

      Supervisor.start_link(children, strategy: :rest_for_one)

  A listener sending its changes to the current process:

      iex> :ok = Barrel.create_barrel("listener-example")
      iex> children = [
      ...>   {Barrel.Listener, barrel: "listener-example", subscribe_to: ["/type/order"], to: self()}
      ...> ]
      iex> {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      iex> [{Barrel.Listener, listener, :worker, [Barrel.Listener]}] = Supervisor.which_children(sup)
      iex> {:ok, barrel} = Barrel.open("listener-example")
      iex> {:ok, "order-1", _rev} = Barrel.save_doc(barrel, %{"id" => "order-1", "type" => "order"})
      iex> receive do
      ...>   {:barrel_change, ^listener, %{"id" => id, "seq" => seq}} -> {id, seq}
      ...> end
      {"order-1", 1}
      iex> Supervisor.stop(sup)
      :ok
  """

  @doc """
  A child specification for `start_link/1`: a worker with id `opts[:id]`
  (default `Barrel.Listener`) and `restart: :transient`.
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    id = if Keyword.keyword?(opts), do: Keyword.get(opts, :id, __MODULE__), else: __MODULE__
    %{id: id, start: {__MODULE__, :start_link, [opts]}, restart: :transient}
  end

  @doc """
  Starts a listener linked to the caller, which owns it: the listener stops
  when its owner exits, and, being linked, a listener that stops for another
  reason than `:normal` (such as `{:shutdown, :not_found}` when its barrel is
  deleted) takes a caller that does not trap exits with it. Options as
  described above. Returns `{:ok, pid}`, or `{:error, reason}` as
  `Barrel.start_listener/2` does, and
  `{:error, {:bad_option, "one of :to and :callback_fun is needed"}}` when
  neither is given.
  """
  @spec start_link([{:barrel, Barrel.barrel() | Barrel.name()} | Barrel.listener_option()]) ::
          {:ok, pid()} | {:error, Barrel.reason()}
  def start_link(opts) do
    with {:ok, opts} <- Barrel.options(opts),
         :ok <- check_receiver(opts) do
      {barrel, opts} = opts |> Map.delete(:id) |> Map.pop(:barrel)
      :barrel_listener.start_link(barrel, Map.put_new(opts, :null, nil))
    end
  end

  defp check_receiver(%{to: _}), do: :ok
  defp check_receiver(%{callback_fun: _}), do: :ok
  defp check_receiver(_), do: {:error, {:bad_option, "one of :to and :callback_fun is needed"}}
end
