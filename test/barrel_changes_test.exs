defmodule Barrel.ChangesTest do
  # The changes feed and listeners from Elixir: changes/3, fold_changes/5,
  # changes_stream/2, start_listener/2, stop_listener/1 and Barrel.Listener
  # in a supervision tree. Every listener a test starts is stopped by it.
  use Barrel.Case, async: true

  doctest Barrel.Listener

  @hash_a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  @hash_b "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

  @no_receiver {:bad_option, "one of :to and :callback_fun is needed"}

  defp seqs(changes), do: Enum.map(changes, & &1["seq"])
  defp ids(changes), do: Enum.map(changes, & &1["id"])

  # Saves one document per id, one write each, so that ids[i] has seq i.
  defp save_ids!(barrel, ids), do: Enum.each(ids, &save!(barrel, %{"id" => &1}))

  defp replicate!(barrel, doc) do
    assert {:ok, id, rev} = Barrel.save_doc(barrel, doc, new_edits: false)
    assert {id, rev} == {doc["id"], doc["_rev"]}
    rev
  end

  # Builds a conflict on document "d": leaves 1-a and 1-b (the winner).
  defp conflicted!(barrel) do
    replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => nil})
    replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"})
  end

  # The change a listener records for the only revision `rev` of `id` at `seq`.
  defp change(id, rev, seq), do: %{"id" => id, "rev" => rev, "seq" => seq, "changes" => [rev]}

  # Exactly `n` changes from `listener` (each within 5 s).
  defp receive_changes(listener, n) do
    for _ <- 1..n//1 do
      assert_receive {:barrel_change, ^listener, change}, 5000
      change
    end
  end

  # The changes `listener` sent to this process until none came for 100 ms.
  defp collect(listener) do
    receive do
      {:barrel_change, ^listener, change} -> [change | collect(listener)]
    after
      100 -> []
    end
  end

  # Sends every message it receives on to `pid`, until :stop.
  defp forward(pid) do
    receive do
      :stop ->
        :ok

      message ->
        send(pid, {:forwarded, message})
        forward(pid)
    end
  end

  defp assert_down(pid) do
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _reason}, 5000
  end

  # The reason the stream raises when it runs.
  defp stream_error(stream) do
    error = assert_raise ErlangError, fn -> Enum.to_list(stream) end
    error.original
  end

  # The pid of the only child of `sup`, once it is not `old`.
  defp restarted_child(sup, old, tries \\ 100) do
    case Supervisor.which_children(sup) do
      [{_id, pid, :worker, _}] when is_pid(pid) and pid != old ->
        pid

      _ when tries > 0 ->
        Process.sleep(10)
        restarted_child(sup, old, tries - 1)
    end
  end

  describe "changes/3" do
    test "lists each document once, at its latest change, in sequence order", %{
      barrel: barrel
    } do
      assert Barrel.changes(barrel, 0) == {:ok, [], 0}

      rev_a1 = save!(barrel, %{"id" => "a", "v" => 1})
      rev_b = save!(barrel, %{"id" => "b"})
      rev_a2 = save!(barrel, %{"id" => "a", "_rev" => rev_a1, "v" => 2})

      assert Barrel.changes(barrel, 0) ==
               {:ok, [change("b", rev_b, 2), change("a", rev_a2, 3)], 3}
    end

    test "since reads what came after a sequence, :now nothing", %{barrel: barrel} do
      save_ids!(barrel, ~w(a b c d e))
      assert {:ok, changes, 5} = Barrel.changes(barrel, 3)
      assert {ids(changes), seqs(changes)} == {~w(d e), [4, 5]}
      assert Barrel.changes(barrel, 5) == {:ok, [], 5}
      assert Barrel.changes(barrel, :now) == {:ok, [], 5}
      # A since beyond the end is kept as the place to continue from.
      assert Barrel.changes(barrel, 9) == {:ok, [], 9}
    end

    test "include_docs: true adds the winning revision, a tombstone for a deletion", %{
      barrel: barrel
    } do
      rev_a = save!(barrel, %{"id" => "a", "v" => 1})
      {:ok, "a", tombstone} = Barrel.delete_doc(barrel, "a", rev_a)
      rev_b = save!(barrel, %{"id" => "b", "v" => 2})

      deleted = Map.put(change("a", tombstone, 2), "deleted", true)
      tombstone_doc = %{"id" => "a", "_rev" => tombstone, "_deleted" => true}
      doc_b = %{"id" => "b", "_rev" => rev_b, "v" => 2}

      assert Barrel.changes(barrel, 0, include_docs: true) ==
               {:ok,
                [
                  Map.put(deleted, "doc", tombstone_doc),
                  Map.put(change("b", rev_b, 3), "doc", doc_b)
                ], 3}

      assert Barrel.changes(barrel, 0, include_docs: false) ==
               {:ok, [deleted, change("b", rev_b, 3)], 3}
    end

    test "null sets what JSON null comes back as, nil by default", %{barrel: barrel} do
      save!(barrel, %{"id" => "a", "v" => nil})
      assert {:ok, [%{"doc" => %{"v" => nil}}], 1} = Barrel.changes(barrel, 0, include_docs: true)

      assert {:ok, [%{"doc" => %{"v" => :null}}], 1} =
               Barrel.changes(barrel, 0, include_docs: true, null: :null)
    end

    test "style: :all_docs lists every leaf revision, the winner first", %{barrel: barrel} do
      conflicted!(barrel)
      winner = change("d", "1-" <> @hash_b, 2)

      assert Barrel.changes(barrel, 0) == {:ok, [winner], 2}
      assert Barrel.changes(barrel, 0, style: :main_only) == {:ok, [winner], 2}

      assert Barrel.changes(barrel, 0, style: :all_docs) ==
               {:ok, [%{winner | "changes" => ["1-" <> @hash_b, "1-" <> @hash_a]}], 2}

      # A deleted branch is a leaf too.
      {:ok, "d", tombstone} = Barrel.delete_doc(barrel, "d", "1-" <> @hash_a)

      assert Barrel.changes(barrel, 0, style: :all_docs) ==
               {:ok,
                [
                  %{
                    "id" => "d",
                    "rev" => "1-" <> @hash_b,
                    "seq" => 3,
                    "changes" => ["1-" <> @hash_b, tombstone]
                  }
                ], 3}
    end

    test "limit returns at most n changes, and last_seq continues after them", %{
      barrel: barrel
    } do
      save_ids!(barrel, ~w(a b c d e))
      assert {:ok, first, 2} = Barrel.changes(barrel, 0, limit: 2)
      assert seqs(first) == [1, 2]
      assert {:ok, rest, 5} = Barrel.changes(barrel, 2, limit: 10)
      assert seqs(rest) == [3, 4, 5]
      assert Barrel.changes(barrel, 0, limit: 0) == {:ok, [], 0}
      assert {:ok, all, 5} = Barrel.changes(barrel, 0, limit: :infinity)
      assert seqs(all) == [1, 2, 3, 4, 5]
    end

    test "descending: true lists newest first, with the latest sequence as last_seq", %{
      barrel: barrel
    } do
      save_ids!(barrel, ~w(a b c d e))
      assert {:ok, changes, 5} = Barrel.changes(barrel, 0, descending: true)
      assert seqs(changes) == [5, 4, 3, 2, 1]
      assert {:ok, changes, 5} = Barrel.changes(barrel, 2, descending: true, limit: 2)
      assert seqs(changes) == [5, 4]
      assert {:ok, changes, 5} = Barrel.changes(barrel, 3, descending: true)
      assert seqs(changes) == [5, 4]
    end

    test "filter keeps documents whose current revision matches a pattern", %{barrel: barrel} do
      save!(barrel, %{"id" => "u1", "type" => "User", "locations" => [%{"country" => "France"}]})
      save!(barrel, %{"id" => "o1", "type" => "order", "n" => 3})
      rev_u2 = save!(barrel, %{"id" => "u2", "type" => "user"})

      filtered = fn filter ->
        {:ok, changes, 3} = Barrel.changes(barrel, 0, filter: filter)
        ids(changes)
      end

      assert filtered.("/type/user") == ~w(u1 u2)
      assert filtered.(["/type/user"]) == ~w(u1 u2)
      assert filtered.(["/locations/+/country/france"]) == ~w(u1)
      assert filtered.(["/locations/#"]) == ~w(u1)
      assert filtered.(["/n/3.0"]) == ~w(o1)
      assert filtered.(["/id/o1", "/id/u2"]) == ~w(o1 u2)
      assert filtered.(["/*"]) == ~w(u1 o1 u2)
      assert filtered.([]) == ~w(u1 o1 u2)
      assert filtered.("/type/admin") == []

      # A document that no longer matches leaves the filtered feed.
      save!(barrel, %{"id" => "u2", "_rev" => rev_u2, "type" => "admin"})
      assert {:ok, [%{"id" => "u1"}], 4} = Barrel.changes(barrel, 0, filter: "/type/user")
    end

    test "refuses a since that is not a sequence", %{barrel: barrel} do
      for since <- [-1, "0", 1.5, :later, nil] do
        assert Barrel.changes(barrel, since) == {:error, {:bad_arg, :since}}
      end
    end

    test "refuses options of the wrong type or unknown", %{barrel: barrel} do
      for {key, value} <- [
            include_docs: 1,
            style: :other,
            limit: -1,
            limit: 1.5,
            descending: "yes",
            filter: [:a],
            filter: 1,
            null: "null",
            unknown: true
          ] do
        assert Barrel.changes(barrel, 0, [{key, value}]) == {:error, {:bad_option, {key, value}}}
      end
    end

    test "refuses patterns that cannot be parsed", %{barrel: barrel} do
      assert Barrel.changes(barrel, 0, filter: "type") == {:error, {:bad_pattern, "type"}}
      assert Barrel.changes(barrel, 0, filter: ["/a/#/b"]) == {:error, {:bad_pattern, "/a/#/b"}}
    end

    test "refuses options that are not a keyword list", %{barrel: barrel} do
      for opts <- [%{limit: 1}, [:limit], [{"limit", 1}], :limit] do
        assert Barrel.changes(barrel, 0, opts) == {:error, {:bad_option, opts}}
      end
    end

    test "a closed handle, a deleted barrel, a handle that is not a barrel", %{
      barrel: barrel,
      name: name
    } do
      {:ok, other} = Barrel.open(name)
      :ok = Barrel.close(other)
      assert Barrel.changes(other, 0) == {:error, :closed}
      :ok = Barrel.delete_barrel(name)
      assert Barrel.changes(barrel, 0) == {:error, :not_found}
      assert Barrel.changes(make_ref(), 0) == {:error, {:bad_arg, :barrel}}
      assert Barrel.changes(name, 0) == {:error, {:bad_arg, :barrel}}
    end
  end

  describe "fold_changes/5" do
    test "folds over the changes in sequence order, with the options of changes/3", %{
      barrel: barrel
    } do
      save_ids!(barrel, ~w(a b c))
      ids = fn change, acc -> {:ok, [change["id"] | acc]} end
      assert Barrel.fold_changes(barrel, 0, ids, []) == {:ok, ~w(c b a), 3}
      assert Barrel.fold_changes(barrel, 1, ids, []) == {:ok, ~w(c b), 3}

      doc_ids = fn change, acc -> {:ok, [change["doc"]["id"] | acc]} end

      assert Barrel.fold_changes(barrel, 0, doc_ids, [],
               include_docs: true,
               descending: true,
               limit: 2
             ) == {:ok, ~w(b c), 3}
    end

    test "{:stop, acc} and :stop end at the sequence of the last change given", %{
      barrel: barrel
    } do
      save_ids!(barrel, for(i <- 1..10, do: "doc-#{i}"))

      count_to_4 = fn
        _change, 3 -> {:stop, 4}
        _change, n -> {:ok, n + 1}
      end

      assert Barrel.fold_changes(barrel, 0, count_to_4, 0) == {:ok, 4, 4}
      assert Barrel.fold_changes(barrel, 0, fn _, _ -> :stop end, :acc) == {:ok, :acc, 1}

      # The next fold starts where the stopped one ended.
      seqs = fn change, acc -> {:ok, acc ++ [change["seq"]]} end
      assert Barrel.fold_changes(barrel, 4, seqs, []) == {:ok, Enum.to_list(5..10), 10}
    end

    test "reads one snapshot: writes made meanwhile are not seen", %{barrel: barrel} do
      {:ok, _} = Barrel.save_docs(barrel, for(i <- 1..300, do: %{"id" => "doc-#{i}"}))

      writer = fn change, n ->
        save!(barrel, %{"id" => "new-#{change["seq"]}"})
        {:ok, n + 1}
      end

      assert Barrel.fold_changes(barrel, 0, writer, 0) == {:ok, 300, 300}
      assert {:ok, _changes, 600} = Barrel.changes(barrel, 0)
    end

    test "raises on a return that is not {:ok, acc}, {:stop, acc} or :stop", %{barrel: barrel} do
      save!(barrel, %{"id" => "a"})

      assert_raise ErlangError, "Erlang error: {:bad_fold_return, :next}", fn ->
        Barrel.fold_changes(barrel, 0, fn _, _ -> :next end, [])
      end
    end

    test "refuses a function that does not take two arguments", %{barrel: barrel} do
      assert Barrel.fold_changes(barrel, 0, fn _ -> :ok end, []) ==
               {:error, {:bad_arg, :fold_fun}}

      assert Barrel.fold_changes(barrel, 0, nil, []) == {:error, {:bad_arg, :fold_fun}}
    end

    test "refuses what changes/3 refuses", %{barrel: barrel} do
      collect = &{:ok, [&1 | &2]}
      assert Barrel.fold_changes(barrel, -1, collect, []) == {:error, {:bad_arg, :since}}

      assert Barrel.fold_changes(barrel, 0, collect, [], style: :other) ==
               {:error, {:bad_option, {:style, :other}}}

      assert Barrel.fold_changes(barrel, 0, collect, [], [:x]) == {:error, {:bad_option, [:x]}}
      :ok = Barrel.close(barrel)
      assert Barrel.fold_changes(barrel, 0, collect, []) == {:error, :closed}
    end
  end

  describe "changes_stream/2" do
    test "reads the feed in chunks, as changes/3 returns it", %{barrel: barrel} do
      {:ok, _} = Barrel.save_docs(barrel, for(i <- 1..600, do: %{"id" => "doc-#{i}"}))
      {:ok, changes, 600} = Barrel.changes(barrel, 0)
      assert seqs(changes) == Enum.to_list(1..600)

      assert Enum.to_list(Barrel.changes_stream(barrel, chunk: 100)) == changes
      assert Enum.to_list(Barrel.changes_stream(barrel, chunk: 7)) == changes
      assert Enum.to_list(Barrel.changes_stream(barrel)) == changes

      assert Enum.to_list(Barrel.changes_stream(barrel, since: 550, chunk: 100)) ==
               Enum.drop(changes, 550)
    end

    test "passes include_docs, style, filter and null on", %{barrel: barrel} do
      conflicted!(barrel)
      save_ids!(barrel, ~w(a b c))
      save!(barrel, %{"id" => "u", "type" => "user", "v" => nil})

      for opts <- [
            [include_docs: true],
            [include_docs: true, null: :null],
            [style: :all_docs],
            [filter: "/type/user"],
            [filter: ["/id/d", "/id/b"], include_docs: true, style: :all_docs]
          ] do
        {:ok, changes, _} = Barrel.changes(barrel, 0, opts)
        assert changes != []
        assert Enum.to_list(Barrel.changes_stream(barrel, [chunk: 1] ++ opts)) == changes
      end
    end

    test "is lazy: it reads a chunk when it needs one", %{barrel: barrel} do
      stream = Barrel.changes_stream(barrel, chunk: 100)
      # Written after the stream was made, read when it runs.
      {:ok, _} = Barrel.save_docs(barrel, for(i <- 1..250, do: %{"id" => "doc-#{i}"}))
      assert seqs(Enum.take(stream, 3)) == [1, 2, 3]

      # Taking the first chunk does not read a second one, which would fail.
      closing =
        Stream.each(stream, fn change -> if change["seq"] == 100, do: Barrel.close(barrel) end)

      assert length(Enum.take(closing, 100)) == 100
      assert stream_error(stream) == :closed
    end

    test "is empty for an empty barrel, and from :now", %{barrel: barrel} do
      assert Enum.to_list(Barrel.changes_stream(barrel)) == []
      save_ids!(barrel, ~w(a b))
      assert Enum.to_list(Barrel.changes_stream(barrel, since: :now)) == []
    end

    test "raises errors when it runs", %{barrel: barrel} do
      for {opts, reason} <- [
            {[chunk: 0], {:bad_option, {:chunk, 0}}},
            {[chunk: 1.5], {:bad_option, {:chunk, 1.5}}},
            {[limit: 10], {:bad_option, {:limit, 10}}},
            {[descending: true], {:bad_option, {:descending, true}}},
            {[style: :other], {:bad_option, {:style, :other}}},
            {[unknown: 1], {:bad_option, {:unknown, 1}}},
            {[:x], {:bad_option, [:x]}},
            {[since: -1], {:bad_arg, :since}},
            {[filter: "type"], {:bad_pattern, "type"}}
          ] do
        # Making the stream reads nothing, so cannot fail.
        stream = Barrel.changes_stream(barrel, opts)
        assert stream_error(stream) == reason
      end

      assert stream_error(Barrel.changes_stream(make_ref())) == {:bad_arg, :barrel}
    end
  end

  describe "start_listener/2 and stop_listener/1" do
    test "sends live changes to the caller", %{barrel: barrel} do
      {:ok, listener} = Barrel.start_listener(barrel, [])
      rev = save!(barrel, %{"id" => "a"})
      assert receive_changes(listener, 1) == [change("a", rev, 1)]
      assert Barrel.stop_listener(listener) == :ok
    end

    test "to: sends to the process given", %{barrel: barrel} do
      test = self()

      forwarder = spawn_link(fn -> forward(test) end)

      {:ok, listener} = Barrel.start_listener(barrel, to: forwarder)
      rev = save!(barrel, %{"id" => "a"})

      assert_receive {:forwarded, {:barrel_change, ^listener, change}}, 5000
      assert change == change("a", rev, 1)
      refute_received {:barrel_change, _, _}
      assert Barrel.stop_listener(listener) == :ok
      send(forwarder, :stop)

      {:ok, listener} = Barrel.start_listener(barrel, to: self())
      rev = save!(barrel, %{"id" => "b"})
      assert receive_changes(listener, 1) == [change("b", rev, 2)]
      assert Barrel.stop_listener(listener) == :ok
    end

    test "since: :now, the default, hears only later changes", %{barrel: barrel} do
      save!(barrel, %{"id" => "old"})

      for {opts, id} <- [{[], "new"}, {[since: :now], "newer"}] do
        {:ok, listener} = Barrel.start_listener(barrel, opts)
        save!(barrel, %{"id" => id})
        assert ids(collect(listener)) == [id]
        assert Barrel.stop_listener(listener) == :ok
      end
    end

    test "since: seq replays the feed after it, then goes on live, each change once", %{
      barrel: barrel
    } do
      save_ids!(barrel, ~w(a b c))

      {:ok, listener} = Barrel.start_listener(barrel, to: self(), since: 0)
      assert seqs(receive_changes(listener, 3)) == [1, 2, 3]
      save!(barrel, %{"id" => "d"})
      assert [%{"id" => "d", "seq" => 4}] = receive_changes(listener, 1)
      assert collect(listener) == []
      assert Barrel.stop_listener(listener) == :ok

      {:ok, listener} = Barrel.start_listener(barrel, since: 2)
      assert seqs(collect(listener)) == [3, 4]
      assert Barrel.stop_listener(listener) == :ok
    end

    test "subscribe_to hears matching documents, and those that stop matching", %{
      barrel: barrel
    } do
      {:ok, users} = Barrel.start_listener(barrel, subscribe_to: ["/type/user"])
      {:ok, either} = Barrel.start_listener(barrel, subscribe_to: ["/id/o1", "/type/user"])

      rev1 = save!(barrel, %{"id" => "u1", "type" => "User"})
      save!(barrel, %{"id" => "o1", "type" => "order"})
      rev3 = save!(barrel, %{"id" => "u1", "_rev" => rev1, "type" => "admin"})
      rev4 = save!(barrel, %{"id" => "u1", "_rev" => rev3, "type" => "guest"})
      rev5 = save!(barrel, %{"id" => "u1", "_rev" => rev4, "type" => "user"})
      {:ok, "u1", _} = Barrel.delete_doc(barrel, "u1", rev5)

      # 1 matches, 3 leaves (its previous revision matched), 4 matches
      # neither, 5 is back, 6 is its deletion.
      assert seqs(collect(users)) == [1, 3, 5, 6]
      assert seqs(collect(either)) == [1, 2, 3, 5, 6]
      assert Barrel.stop_listener(users) == :ok
      assert Barrel.stop_listener(either) == :ok
    end

    test "include_docs, style and null shape the changes it sends", %{barrel: barrel} do
      {:ok, listener} = Barrel.start_listener(barrel, include_docs: true, style: :all_docs)
      conflicted!(barrel)
      rev_a = "1-" <> @hash_a
      rev_b = "1-" <> @hash_b

      assert receive_changes(listener, 2) == [
               Map.put(change("d", rev_a, 1), "doc", %{"id" => "d", "_rev" => rev_a, "v" => nil}),
               %{
                 "id" => "d",
                 "rev" => rev_b,
                 "seq" => 2,
                 "changes" => [rev_b, rev_a],
                 "doc" => %{"id" => "d", "_rev" => rev_b, "v" => "b"}
               }
             ]

      assert Barrel.stop_listener(listener) == :ok

      # With 1-b deleted, 1-a wins again.
      {:ok, "d", _} = Barrel.delete_doc(barrel, "d", rev_b)
      {:ok, listener} = Barrel.start_listener(barrel, since: 0, include_docs: true, null: :null)

      assert [%{"seq" => 3, "rev" => ^rev_a, "doc" => %{"v" => :null}}] =
               receive_changes(listener, 1)

      assert Barrel.stop_listener(listener) == :ok
    end

    test "callback_fun is called with each change, in the listener", %{barrel: barrel} do
      test = self()
      callback = fn change -> send(test, {:called, self(), change}) end
      {:ok, listener} = Barrel.start_listener(barrel, callback_fun: callback)
      rev_a = save!(barrel, %{"id" => "a"})
      rev_b = save!(barrel, %{"id" => "b"})

      assert_receive {:called, ^listener, change_a}, 5000
      assert_receive {:called, ^listener, change_b}, 5000
      assert [change_a, change_b] == [change("a", rev_a, 1), change("b", rev_b, 2)]
      refute_received {:barrel_change, _, _}
      assert Barrel.stop_listener(listener) == :ok
    end

    test "takes a barrel name", %{barrel: barrel, name: name} do
      {:ok, listener} = Barrel.start_listener(name, since: 0)
      rev = save!(barrel, %{"id" => "a"})
      assert receive_changes(listener, 1) == [change("a", rev, 1)]
      assert Barrel.stop_listener(listener) == :ok
    end

    test "stop_listener stops it once", %{barrel: barrel} do
      {:ok, listener} = Barrel.start_listener(barrel, [])
      ref = Process.monitor(listener)
      assert Barrel.stop_listener(listener) == :ok
      assert_receive {:DOWN, ^ref, :process, ^listener, _}, 5000
      save!(barrel, %{"id" => "a"})
      refute_receive {:barrel_change, ^listener, _}, 100
      assert Barrel.stop_listener(listener) == {:error, :not_found}
      assert Barrel.stop_listener(:listener) == {:error, :not_found}
    end

    test "goes away when its owner exits", %{barrel: barrel} do
      test = self()

      spawn(fn ->
        {:ok, listener} = Barrel.start_listener(barrel, to: test)
        send(test, {:listener, listener})
      end)

      assert_receive {:listener, listener}, 5000
      assert_down(listener)
      save!(barrel, %{"id" => "a"})
      refute_receive {:barrel_change, ^listener, _}, 100
    end

    test "goes away when its to process exits", %{barrel: barrel} do
      receiver = spawn(fn -> receive do: (:stop -> :ok) end)
      {:ok, listener} = Barrel.start_listener(barrel, to: receiver)
      send(receiver, :stop)
      assert_down(listener)
    end

    test "goes away when its barrel is deleted", %{barrel: barrel, name: name} do
      {:ok, listener} = Barrel.start_listener(barrel, [])
      :ok = Barrel.delete_barrel(name)
      assert_down(listener)
    end

    test "refuses options of the wrong type or unknown", %{barrel: barrel} do
      for {key, value} <- [
            subscribe_to: [],
            subscribe_to: "/*",
            subscribe_to: [:all],
            since: -1,
            since: "0",
            to: :self,
            callback_fun: 1,
            callback_fun: &is_map_key/2,
            include_docs: 1,
            style: :other,
            max_queue: 0,
            window: 0,
            null: "null",
            unknown: true
          ] do
        assert Barrel.start_listener(barrel, [{key, value}]) ==
                 {:error, {:bad_option, {key, value}}}
      end
    end

    test "refuses patterns, options, barrels it cannot use", %{barrel: barrel} do
      assert Barrel.start_listener(barrel, subscribe_to: ["no-slash"]) ==
               {:error, {:bad_pattern, "no-slash"}}

      for opts <- [%{since: 0}, [:since], :since] do
        assert Barrel.start_listener(barrel, opts) == {:error, {:bad_option, opts}}
      end

      assert Barrel.start_listener(unique_name(), []) == {:error, :not_found}
      assert Barrel.start_listener(:barrel, []) == {:error, {:bad_arg, :barrel}}
      :ok = Barrel.close(barrel)
      assert Barrel.start_listener(barrel, []) == {:error, :closed}
    end
  end

  describe "Barrel.Listener" do
    test "runs under a Supervisor, restarted with its options after a crash", %{
      barrel: barrel,
      name: name
    } do
      rev_old = save!(barrel, %{"id" => "old"})
      children = [{Barrel.Listener, barrel: name, since: 0, to: self()}]
      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)

      assert [{Barrel.Listener, first, :worker, [Barrel.Listener]}] =
               Supervisor.which_children(sup)

      rev_a = save!(barrel, %{"id" => "a"})
      assert receive_changes(first, 2) == [change("old", rev_old, 1), change("a", rev_a, 2)]

      Process.exit(first, :kill)
      assert_down(first)
      second = restarted_child(sup, first)
      # since: 0 again: the replay starts over.
      assert seqs(receive_changes(second, 2)) == [1, 2]
      rev_b = save!(barrel, %{"id" => "b"})
      assert receive_changes(second, 1) == [change("b", rev_b, 3)]

      :ok = Supervisor.stop(sup)
      assert_down(second)
      assert collect(second) == []
    end

    test "is not restarted after stopping normally", %{barrel: barrel} do
      children = [{Barrel.Listener, barrel: barrel, to: self()}]
      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      [{Barrel.Listener, listener, :worker, _}] = Supervisor.which_children(sup)

      assert Barrel.stop_listener(listener) == :ok
      assert_down(listener)
      assert [{Barrel.Listener, :undefined, :worker, _}] = Supervisor.which_children(sup)
      :ok = Supervisor.stop(sup)
    end

    test "child_spec/1 takes an :id, so that one supervisor can have several", %{
      barrel: barrel
    } do
      test = self()
      users = [barrel: barrel, id: :users, subscribe_to: ["/type/user"], to: test]
      callback = fn change -> send(test, {:called, change["id"]}) end

      orders = [
        barrel: barrel,
        id: :orders,
        subscribe_to: ["/type/order"],
        callback_fun: callback
      ]

      assert Barrel.Listener.child_spec(users) == %{
               id: :users,
               start: {Barrel.Listener, :start_link, [users]},
               restart: :transient
             }

      assert %{id: Barrel.Listener} = Barrel.Listener.child_spec(barrel: barrel, to: test)

      {:ok, sup} =
        Supervisor.start_link([{Barrel.Listener, users}, {Barrel.Listener, orders}],
          strategy: :one_for_one
        )

      save!(barrel, %{"id" => "o1", "type" => "order"})
      save!(barrel, %{"id" => "u1", "type" => "user"})
      assert_receive {:called, "o1"}, 5000
      assert_receive {:barrel_change, _users, %{"id" => "u1", "seq" => 2}}, 5000
      refute_receive {:barrel_change, _, %{"id" => "o1"}}, 100
      :ok = Supervisor.stop(sup)
    end

    test "start_link/1 links the listener to the caller, its owner", %{barrel: barrel} do
      {:ok, listener} = Barrel.Listener.start_link(barrel: barrel, to: self())
      assert {:links, links} = Process.info(self(), :links)
      assert listener in links
      rev = save!(barrel, %{"id" => "a"})
      assert receive_changes(listener, 1) == [change("a", rev, 1)]
      assert Barrel.stop_listener(listener) == :ok
      assert_down(listener)

      test = self()

      spawn(fn ->
        {:ok, listener} = Barrel.Listener.start_link(barrel: barrel, to: test)
        send(test, {:listener, listener})
      end)

      assert_receive {:listener, listener}, 5000
      assert_down(listener)
    end

    test "start_link/1 refuses what start_listener/2 refuses, and a missing receiver", %{
      barrel: barrel
    } do
      assert Barrel.Listener.start_link(barrel: barrel) == {:error, @no_receiver}
      assert Barrel.Listener.start_link(barrel: barrel, since: 0) == {:error, @no_receiver}
      assert Barrel.Listener.start_link(to: self()) == {:error, {:bad_arg, :barrel}}

      assert Barrel.Listener.start_link(barrel: barrel, to: self(), since: -1) ==
               {:error, {:bad_option, {:since, -1}}}

      assert Barrel.Listener.start_link([:to]) == {:error, {:bad_option, [:to]}}
      assert Barrel.Listener.start_link(barrel: unique_name(), to: self()) == {:error, :not_found}
    end
  end
end
