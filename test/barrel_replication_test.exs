defmodule Barrel.ReplicationTest do
  # Replication from Elixir: replicate/3, replication_info/1 and
  # cancel_replication/1 between barrels of this node, over HTTP and over the
  # WebSocket stream, and the p2p_write / p2p_read options of save_doc/3 and
  # fetch_doc/3. A barrel of this node reached through the module's in-VM
  # HTTP server stands for a remote one. The Rust tests cover the algorithm
  # (checkpoints, batches, retries); these check what the Elixir API promises.
  use Barrel.Case, async: true

  @rev_a "1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  @rev_b "1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

  @final [:completed, :failed, :cancelled]

  setup_all do
    {:ok, http} = Barrel.start_http(port: 0)
    {:ok, %{url: url, port: port}} = Barrel.http_info(http)
    on_exit(fn -> :ok = Barrel.stop_http(http) end)
    %{url: url, host: "127.0.0.1:#{port}"}
  end

  # The progress messages of `rep`, in order, up to the first for which
  # `done?` is true (each within 5 s).
  defp progress_until(rep, done?) do
    assert_receive {:barrel_replication, ^rep, progress}, 5000
    if done?.(progress), do: [progress], else: [progress | progress_until(rep, done?)]
  end

  # Waits for the end of `rep`, every leg of it, and returns its info.
  defp await_end(rep) do
    assert_receive {:barrel_replication, ^rep, _progress}, 5000
    {:ok, info} = Barrel.replication_info(rep)
    if info.state in @final, do: info, else: await_end(rep)
  end

  # Replicates and returns the info of the ended replication.
  defp replicate!(source, target, opts \\ []) do
    {:ok, rep} = Barrel.replicate(source, target, [to: self()] ++ opts)
    await_end(rep)
  end

  # Drops the messages `rep` already sent.
  defp flush(rep) do
    receive do
      {:barrel_replication, ^rep, _} -> flush(rep)
    after
      0 -> :ok
    end
  end

  # Every document with its leaf revisions, winner first, as the changes feed
  # lists them, in id order: what replicas agree on (sequences are each
  # barrel's own).
  defp leaves(barrel) do
    {:ok, changes, _last_seq} = Barrel.changes(barrel, 0, style: :all_docs)
    changes |> Enum.map(&Map.delete(&1, "seq")) |> Enum.sort_by(& &1["id"])
  end

  defp open!(name) do
    {:ok, barrel} = Barrel.open(name)
    barrel
  end

  # A barrel with an edited document, a deleted one and a conflict (leaves
  # @rev_a and @rev_b, the winner); returns the revisions of the first two.
  defp fill!(barrel) do
    rev1 = save!(barrel, %{"id" => "edited", "v" => 1})
    edited = save!(barrel, %{"id" => "edited", "_rev" => rev1, "v" => 2})

    {:ok, "deleted", deleted} =
      Barrel.delete_doc(barrel, "deleted", save!(barrel, %{"id" => "deleted"}))

    save!(barrel, %{"id" => "c", "_rev" => @rev_a, "side" => "a"}, new_edits: false)
    save!(barrel, %{"id" => "c", "_rev" => @rev_b, "side" => "b"}, new_edits: false)
    %{edited: edited, deleted: deleted}
  end

  # Where nothing answers any more: the address of a server just stopped.
  defp dead_host do
    {:ok, http} = Barrel.start_http(port: 0)
    {:ok, %{port: port}} = Barrel.http_info(http)
    :ok = Barrel.stop_http(http)
    "127.0.0.1:#{port}"
  end

  # The value of `fun` once it is not {:error, :not_found}, polling for up to 5 s.
  defp wait_for(fun, tries \\ 100) do
    case fun.() do
      {:error, :not_found} when tries > 0 ->
        Process.sleep(50)
        wait_for(fun, tries - 1)

      other ->
        other
    end
  end

  # The info of `rep` once it has ended, polling for up to 5 s (for a
  # replication started without :to).
  defp await_end_polling(rep, tries \\ 100) do
    {:ok, info} = Barrel.replication_info(rep)

    if info.state in @final or tries == 0 do
      info
    else
      Process.sleep(50)
      await_end_polling(rep, tries - 1)
    end
  end

  describe "replicate/3 between barrels of this node" do
    test "copies every leaf revision with its history: edits, conflicts and deletions",
         %{name: name, barrel: barrel} do
      %{edited: edited, deleted: deleted} = fill!(barrel)
      target = unique_name()

      info = replicate!(name, target)

      assert %{state: :completed, source: ^name, target: ^target, docs_read: 3} = info
      assert %{docs_written: 4, errors: 0, last_error: :undefined} = info
      copy = open!(target)

      assert [
               %{"id" => "c", "rev" => @rev_b, "changes" => [@rev_b, @rev_a]},
               %{
                 "id" => "deleted",
                 "rev" => ^deleted,
                 "changes" => [^deleted],
                 "deleted" => true
               },
               %{"id" => "edited", "rev" => ^edited, "changes" => [^edited]}
             ] = leaves(copy)

      assert leaves(copy) == leaves(barrel)

      assert Barrel.fetch_doc(copy, "edited", revs: true) ==
               Barrel.fetch_doc(barrel, "edited", revs: true)

      assert Barrel.fetch_doc(copy, "c", conflicts: true) ==
               {:ok, %{"id" => "c", "_rev" => @rev_b, "side" => "b", "_conflicts" => [@rev_a]}}

      assert Barrel.fetch_doc(copy, "deleted") == {:error, :not_found}
      assert {:ok, %{"_deleted" => true}} = Barrel.fetch_doc(copy, "deleted", rev: deleted)
    end

    test "sync: true replicates both ways: edits made on each side meanwhile become one conflict",
         %{name: name, barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "doc", "v" => 0})
      other = unique_name()
      replicate!(name, other)
      copy = open!(other)

      here = save!(barrel, %{"id" => "doc", "_rev" => rev1, "v" => "here"})
      there = save!(copy, %{"id" => "doc", "_rev" => rev1, "v" => "there"})
      only_there = save!(copy, %{"id" => "only-there"})

      info = replicate!(name, other, sync: true)

      assert %{state: :completed, sync: true, docs_written: 3} = info
      assert %{push: %{state: :completed, docs_written: 1}} = info.legs
      assert %{pull: %{state: :completed, docs_written: 2}} = info.legs
      assert leaves(barrel) == leaves(copy)

      assert Barrel.fetch_doc(barrel, "only-there") ==
               {:ok, %{"id" => "only-there", "_rev" => only_there}}

      # Both generation 2: the highest hash wins, on both sides.
      [winner, loser] = Enum.sort([here, there], :desc)

      for side <- [barrel, copy] do
        assert {:ok, %{"_rev" => ^winner, "_conflicts" => [^loser]}} =
                 Barrel.fetch_doc(side, "doc", conflicts: true)
      end
    end

    test "a replication between the same barrels starts after the previous one's checkpoint",
         %{name: name, barrel: barrel} do
      save!(barrel, %{"id" => "a"})
      save!(barrel, %{"id" => "b"})
      target = unique_name()

      assert %{docs_read: 2, docs_written: 2} = replicate!(name, target)
      assert %{docs_read: 0, docs_written: 0} = replicate!(name, target)

      save!(barrel, %{"id" => "c"})
      assert %{docs_read: 1, docs_written: 1} = replicate!(name, target)

      # since: reads the feed again; the target has every revision already.
      assert %{docs_read: 3, docs_written: 0, state: :completed} =
               replicate!(name, target, since: 0)

      assert %{docs_read: 1, docs_written: 0} = replicate!(name, target, since: 2)
      assert leaves(open!(target)) == leaves(barrel)
    end

    test "to: hears each batch and state of the leg, ending with its final state",
         %{name: name, barrel: barrel} do
      for id <- ~w(a b c d e), do: save!(barrel, %{"id" => id})

      {:ok, rep} = Barrel.replicate(name, unique_name(), batch_size: 2, to: self())
      progress = progress_until(rep, &(&1.state in @final))

      assert hd(progress).state == :running
      assert Enum.all?(progress, &(&1.leg == :push))
      assert progress |> Enum.map(& &1.docs_written) |> Enum.dedup() == [0, 2, 4, 5]

      assert List.last(progress) == %{
               leg: :push,
               state: :completed,
               docs_read: 5,
               docs_written: 5,
               missing_checked: 5,
               attachments_copied: 0,
               attachment_bytes: 0,
               last_seq: 5,
               errors: 0,
               last_error: :undefined
             }

      assert {:ok, %{state: :completed, docs_read: 5, docs_written: 5}} =
               Barrel.replication_info(rep)

      refute_receive {:barrel_replication, ^rep, _}, 100
    end

    test "continuous: true follows the source until cancel_replication/1",
         %{name: name, barrel: barrel} do
      first = save!(barrel, %{"id" => "first"})
      target = unique_name()

      {:ok, rep} = Barrel.replicate(name, target, continuous: true, to: self())
      progress_until(rep, &(&1.state == :idle))
      copy = open!(target)
      assert Barrel.fetch_doc(copy, "first") == {:ok, %{"id" => "first", "_rev" => first}}

      later = save!(barrel, %{"id" => "later"})
      progress_until(rep, &(&1.state == :idle and &1.docs_written == 2))
      assert Barrel.fetch_doc(copy, "later") == {:ok, %{"id" => "later", "_rev" => later}}

      # A wake-up with nothing new may make it :running again for a moment.
      assert {:ok, %{state: state, continuous: true, docs_written: 2}} =
               Barrel.replication_info(rep)

      assert state in [:idle, :running]

      assert Barrel.cancel_replication(rep) == :ok
      assert {:ok, %{state: :cancelled, docs_written: 2}} = Barrel.replication_info(rep)
      flush(rep)

      save!(barrel, %{"id" => "after"})
      refute_receive {:barrel_replication, ^rep, _}, 300
      assert Barrel.fetch_doc(copy, "after") == {:error, :not_found}

      # Cancelling what has stopped is fine; it stays known.
      assert Barrel.cancel_replication(rep) == :ok
      assert {:ok, %{state: :cancelled}} = Barrel.replication_info(rep)
    end

    test "filter: copies only the documents whose current revision matches a pattern",
         %{name: name, barrel: barrel} do
      ann = save!(barrel, %{"id" => "ann", "type" => "user"})
      save!(barrel, %{"id" => "o1", "type" => "order"})
      special = save!(barrel, %{"id" => "special", "type" => "order"})
      bob = save!(barrel, %{"id" => "bob", "type" => "user"})
      save!(barrel, %{"id" => "bob", "_rev" => bob, "type" => "former-user"})
      target = unique_name()

      assert %{state: :completed, docs_written: 2} =
               replicate!(name, target, filter: ["/type/user", "/id/special"])

      assert leaves(open!(target)) == [
               %{"id" => "ann", "rev" => ann, "changes" => [ann]},
               %{"id" => "special", "rev" => special, "changes" => [special]}
             ]
    end

    test "refuses bad options and sides with {:error, reason}, creating nothing", %{name: name} do
      for {key, value} <- [
            bogus: 1,
            continuous: :yes,
            sync: 1,
            filter: [:type],
            since: -1,
            batch_size: 0,
            to: :me,
            persist: "yes",
            create_target: nil,
            auth: {:basic, "user"},
            auth: {:bearer, ~c"token"}
          ] do
        target = unique_name()

        assert Barrel.replicate(name, target, [{key, value}]) ==
                 {:error, {:bad_option, {key, value}}}

        assert Barrel.barrel_infos(target) == {:error, :not_found}
      end

      for opts <- [%{continuous: true}, [:continuous], :continuous] do
        assert Barrel.replicate(name, unique_name(), opts) == {:error, {:bad_option, opts}}
      end

      assert Barrel.replicate(42, name) == {:error, {:bad_endpoint, 42}}
      assert Barrel.replicate(name, "") == {:error, {:bad_endpoint, ""}}
      assert Barrel.replicate(name, nil) == {:error, {:bad_endpoint, nil}}
      assert Barrel.replicate(name, "_target") == {:error, {:invalid_name, "_target"}}

      missing = unique_name()
      assert Barrel.replicate(missing, name) == {:error, :not_found}
      assert Barrel.replicate(name, missing, create_target: false) == {:error, :not_found}
      assert Barrel.barrel_infos(missing) == {:error, :not_found}

      assert Barrel.replicate(name, missing, filter: ["type/user"]) ==
               {:error, {:bad_pattern, "type/user"}}

      assert Barrel.barrel_infos(missing) == {:error, :not_found}
    end

    test "replication_info/1 and cancel_replication/1 of an unknown replication" do
      assert Barrel.replication_info("rep-unknown") == {:error, :not_found}
      assert Barrel.cancel_replication("rep-unknown") == {:error, :not_found}
      assert Barrel.replication_info(42) == {:error, :not_found}
    end
  end

  describe "replicate/3 with a remote barrel" do
    test "pushes to a barrel over HTTP, creating it, and pulls back from it",
         %{name: name, barrel: barrel, url: url} do
      fill!(barrel)
      remote = unique_name()
      remote_url = "#{url}/barrels/#{remote}"

      assert %{state: :completed, target: ^remote_url, docs_written: 4} =
               replicate!(name, remote_url)

      assert leaves(open!(remote)) == leaves(barrel)

      back = unique_name()

      assert %{state: :completed, source: ^remote_url, docs_written: 4} =
               replicate!(remote_url, back)

      assert leaves(open!(back)) == leaves(barrel)
    end

    test "continuous and sync: true with a barrel over HTTP", %{
      name: name,
      barrel: barrel,
      url: url
    } do
      remote = unique_name()
      :ok = Barrel.create_barrel(remote)
      remote_barrel = open!(remote)

      {:ok, rep} =
        Barrel.replicate(name, "#{url}/barrels/#{remote}", continuous: true, sync: true)

      here = save!(barrel, %{"id" => "here"})
      there = save!(remote_barrel, %{"id" => "there"})

      assert wait_for(fn -> Barrel.fetch_doc(remote_barrel, "here") end) ==
               {:ok, %{"id" => "here", "_rev" => here}}

      assert wait_for(fn -> Barrel.fetch_doc(barrel, "there") end) ==
               {:ok, %{"id" => "there", "_rev" => there}}

      assert {:ok, %{sync: true, legs: %{push: _, pull: _}}} = Barrel.replication_info(rep)
      assert Barrel.cancel_replication(rep) == :ok
      assert {:ok, %{state: :cancelled}} = Barrel.replication_info(rep)
    end

    test "pushes to a barrel over the WebSocket stream", %{name: name, barrel: barrel, host: host} do
      fill!(barrel)
      remote = unique_name()
      :ok = Barrel.create_barrel(remote)

      assert %{state: :completed, docs_written: 4} = replicate!(name, "ws://#{host}/#{remote}")
      assert leaves(open!(remote)) == leaves(barrel)
    end

    test "a remote side that cannot be reached is an error at once, creating nothing",
         %{name: name} do
      gone = "http://#{dead_host()}/barrels/gone"
      assert {:error, {:storage_error, why}} = Barrel.replicate(gone, unique_name())
      assert is_binary(why)
      assert {:error, {:storage_error, _}} = Barrel.replicate(name, gone)
      assert {:error, {:storage_error, _}} = Barrel.replicate(name, gone, create_target: false)
    end
  end

  describe "p2p_write" do
    test "saves here, then on the hop, creating its barrel", %{
      barrel: barrel,
      host: host,
      url: url
    } do
      remote = unique_name()

      assert {:ok, "a", rev1} =
               Barrel.save_doc(barrel, %{"id" => "a", "v" => nil},
                 p2p_write: %{host: host, name: remote}
               )

      remote_barrel = open!(remote)

      assert Barrel.fetch_doc(remote_barrel, "a") ==
               {:ok, %{"id" => "a", "_rev" => rev1, "v" => nil}}

      # host as a URL, or a charlist.
      assert {:ok, "a", rev2} =
               Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev1, "v" => 2},
                 p2p_write: %{host: url, name: remote}
               )

      assert {:ok, "b", _} =
               Barrel.save_doc(barrel, %{"id" => "b"},
                 p2p_write: %{host: String.to_charlist(host), name: remote}
               )

      assert Barrel.fetch_doc(remote_barrel, "a", revs: true) ==
               Barrel.fetch_doc(barrel, "a", revs: true)

      assert {:ok, %{"_rev" => ^rev2}} = Barrel.fetch_doc(remote_barrel, "a")
      assert leaves(remote_barrel) == leaves(barrel)
    end

    test "pushes every leaf, so a conflict arrives as a conflict", %{barrel: barrel, host: host} do
      save!(barrel, %{"id" => "c", "_rev" => @rev_a}, new_edits: false)
      remote = unique_name()

      assert {:ok, "c", @rev_b} =
               Barrel.save_doc(barrel, %{"id" => "c", "_rev" => @rev_b},
                 new_edits: false,
                 p2p_write: %{host: host, name: remote}
               )

      assert leaves(open!(remote)) == [
               %{"id" => "c", "rev" => @rev_b, "changes" => [@rev_b, @rev_a]}
             ]
    end

    test "writes to each hop of a chain", %{barrel: barrel, host: host, url: url} do
      [first, second] = [unique_name(), unique_name()]
      hop = %{host: url, name: first, p2p_write: %{host: host, name: second}}

      assert {:ok, "a", rev} = Barrel.save_doc(barrel, %{"id" => "a"}, p2p_write: hop)

      for remote <- [first, second] do
        assert Barrel.fetch_doc(open!(remote), "a") == {:ok, %{"id" => "a", "_rev" => rev}}
      end
    end

    test "a hop that cannot be written is named in the error; nothing is undone",
         %{barrel: barrel, host: host} do
      dead = dead_host()
      reached = unique_name()
      hop = %{host: host, name: reached, p2p_write: %{host: dead, name: "gone"}}

      assert {:error, {:p2p_write_failed, "a", rev, [{^dead, {:error, {:storage_error, why}}}]}} =
               Barrel.save_doc(barrel, %{"id" => "a"}, p2p_write: hop)

      assert why =~ dead
      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev}}
      assert Barrel.fetch_doc(open!(reached), "a") == {:ok, %{"id" => "a", "_rev" => rev}}
    end

    test "refuses a hop without a host or a name, before saving anything", %{
      barrel: barrel,
      url: url
    } do
      for hop <- [
            %{host: url},
            %{name: "remote"},
            %{host: 7080, name: "remote"},
            %{host: url, name: :remote},
            [host: url, name: "remote"],
            "#{url}/barrels/remote"
          ] do
        assert Barrel.save_doc(barrel, %{"id" => "a"}, p2p_write: hop) ==
                 {:error, {:bad_option, {:p2p_write, hop}}}
      end

      chained = %{host: url, name: "remote", p2p_write: %{name: "next"}}

      assert Barrel.save_doc(barrel, %{"id" => "a"}, p2p_write: chained) ==
               {:error, {:bad_option, {:p2p_write, %{name: "next"}}}}

      assert Barrel.save_doc(barrel, %{"id" => "a"},
               p2p_write: %{host: url, name: "remote"},
               bogus: 1
             ) ==
               {:error, {:bad_option, {:bogus, 1}}}

      assert Barrel.fetch_doc(barrel, "a") == {:error, :not_found}
    end
  end

  describe "p2p_read" do
    setup %{host: host} do
      remote = unique_name()
      :ok = Barrel.create_barrel(remote)
      %{remote: remote, remote_barrel: open!(remote), hop: %{host: host, name: remote}}
    end

    test "reads here first, then from the first hop of the chain that has the document",
         %{barrel: barrel, remote_barrel: remote_barrel, remote: remote, hop: hop} do
      here = save!(barrel, %{"id" => "here"})
      there = save!(remote_barrel, %{"id" => "there", "note" => nil})
      dead = %{host: dead_host(), name: remote}

      assert Barrel.fetch_doc(barrel, "here", p2p_read: dead) ==
               {:ok, %{"id" => "here", "_rev" => here}}

      chain = Map.put(dead, :p2p_read, hop)

      assert Barrel.fetch_doc(barrel, "there", p2p_read: chain) ==
               {:ok, %{"id" => "there", "_rev" => there, "note" => nil}}

      assert Barrel.fetch_doc(barrel, "there", p2p_read: hop, null: :none) ==
               {:ok, %{"id" => "there", "_rev" => there, "note" => :none}}

      assert Barrel.fetch_doc(barrel, "there") == {:error, :not_found}
      assert Barrel.fetch_doc(barrel, "nowhere", p2p_read: chain) == {:error, :not_found}
    end

    test "a document deleted on the hop is not found", %{
      barrel: barrel,
      remote_barrel: remote_barrel,
      hop: hop
    } do
      {:ok, "gone", _} =
        Barrel.delete_doc(remote_barrel, "gone", save!(remote_barrel, %{"id" => "gone"}))

      assert Barrel.fetch_doc(barrel, "gone", p2p_read: hop) == {:error, :not_found}
    end

    test "cache: true stores what a hop answered here, as the same revision with its history",
         %{barrel: barrel, remote_barrel: remote_barrel, hop: hop} do
      rev1 = save!(remote_barrel, %{"id" => "r", "v" => 1})
      rev2 = save!(remote_barrel, %{"id" => "r", "_rev" => rev1, "v" => 2})

      assert Barrel.fetch_doc(barrel, "r", p2p_read: hop, cache: true) ==
               {:ok, %{"id" => "r", "_rev" => rev2, "v" => 2}}

      assert Barrel.fetch_doc(barrel, "r", revs: true) ==
               Barrel.fetch_doc(remote_barrel, "r", revs: true)

      assert {:ok, [%{"id" => "r", "rev" => ^rev2}], 1} = Barrel.changes(barrel, 0)
    end

    test "refuses a bad hop, and cache: without p2p_read:", %{barrel: barrel, url: url} do
      # A bad hop in a chain is reported alone.
      for {hop, refused} <- [
            {%{host: url}, %{host: url}},
            {[host: url, name: "remote"], [host: url, name: "remote"]},
            {%{host: url, name: "remote", p2p_read: :next}, :next}
          ] do
        assert Barrel.fetch_doc(barrel, "a", p2p_read: hop) ==
                 {:error, {:bad_option, {:p2p_read, refused}}}
      end

      assert Barrel.fetch_doc(barrel, "a", cache: true) == {:error, {:bad_option, {:cache, true}}}
    end
  end
end
