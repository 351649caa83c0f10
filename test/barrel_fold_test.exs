defmodule Barrel.FoldTest do
  # fold_docs/4: order, ranges, limits, early stops.
  use Barrel.Case, async: true

  setup %{barrel: barrel} do
    {:ok, results} =
      Barrel.save_docs(barrel, for(id <- ~w(c a e b d), do: %{"id" => id, "n" => id}))

    revs = Map.new(results, fn {:ok, id, rev} -> {id, rev} end)
    %{revs: revs}
  end

  test "visits live documents in id order", %{barrel: barrel, revs: revs} do
    {:ok, docs} = Barrel.fold_docs(barrel, fn doc, acc -> {:ok, [doc | acc]} end, [])

    assert Enum.reverse(docs) ==
             for(id <- ~w(a b c d e), do: %{"id" => id, "_rev" => revs[id], "n" => id})
  end

  test "orders ids bytewise", %{barrel: barrel} do
    {:ok, _} = Barrel.save_docs(barrel, for(id <- ["é", "Z", "~", "aa"], do: %{"id" => id}))
    assert fold_ids(barrel) == ["Z", "a", "aa", "b", "c", "d", "e", "~", "é"]
  end

  test "skips deleted documents", %{barrel: barrel, revs: revs} do
    {:ok, "b", _} = Barrel.delete_doc(barrel, "b", revs["b"])
    assert fold_ids(barrel) == ~w(a c d e)
  end

  test "returns the accumulator untouched for an empty barrel" do
    name = unique_name()
    :ok = Barrel.create_barrel(name)
    {:ok, empty} = Barrel.open(name)
    assert Barrel.fold_docs(empty, fn _, _ -> raise "called" end, :acc) == {:ok, :acc}
  end

  describe "options" do
    test "start_key starts at an id, inclusive", %{barrel: barrel} do
      assert fold_ids(barrel, start_key: "c") == ~w(c d e)
      assert fold_ids(barrel, start_key: "bb") == ~w(c d e)
    end

    test "end_key ends at an id, inclusive by default", %{barrel: barrel} do
      assert fold_ids(barrel, end_key: "c") == ~w(a b c)
      assert fold_ids(barrel, end_key: "c", inclusive_end: true) == ~w(a b c)
      assert fold_ids(barrel, end_key: "c", inclusive_end: false) == ~w(a b)
      assert fold_ids(barrel, end_key: "cc", inclusive_end: false) == ~w(a b c)
    end

    test "start_key and end_key make a range", %{barrel: barrel} do
      assert fold_ids(barrel, start_key: "b", end_key: "d") == ~w(b c d)
      assert fold_ids(barrel, start_key: "b", end_key: "b") == ~w(b)
      assert fold_ids(barrel, start_key: "b", end_key: "b", inclusive_end: false) == []
      assert fold_ids(barrel, start_key: "d", end_key: "b") == []
    end

    test "limit caps the number of documents", %{barrel: barrel} do
      assert fold_ids(barrel, limit: 2) == ~w(a b)
      assert fold_ids(barrel, limit: 0) == []
      assert fold_ids(barrel, limit: 100) == ~w(a b c d e)
      assert fold_ids(barrel, start_key: "b", end_key: "d", limit: 2) == ~w(b c)
    end

    test "include_docs: false gives ids and revisions only", %{barrel: barrel, revs: revs} do
      {:ok, docs} =
        Barrel.fold_docs(barrel, fn doc, acc -> {:ok, [doc | acc]} end, [],
          include_docs: false,
          limit: 2
        )

      assert Enum.reverse(docs) == [
               %{"id" => "a", "_rev" => revs["a"]},
               %{"id" => "b", "_rev" => revs["b"]}
             ]

      assert fold_ids(barrel, include_docs: true) == ~w(a b c d e)
    end

    test "null sets what JSON null comes back as, nil by default", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "z", "v" => nil})
      one = fn doc, _ -> {:stop, doc} end

      assert Barrel.fold_docs(barrel, one, nil, start_key: "z") ==
               {:ok, %{"id" => "z", "_rev" => rev, "v" => nil}}

      assert Barrel.fold_docs(barrel, one, nil, start_key: "z", null: :null) ==
               {:ok, %{"id" => "z", "_rev" => rev, "v" => :null}}
    end

    test "ill-typed values are refused", %{barrel: barrel} do
      fun = fn _, acc -> {:ok, acc} end

      for {key, value} <- [
            start_key: 1,
            end_key: :b,
            inclusive_end: 1,
            limit: -1,
            limit: 1.0,
            limit: :infinity,
            include_docs: nil,
            null: "null",
            unknown: true
          ] do
        assert Barrel.fold_docs(barrel, fun, 0, [{key, value}]) ==
                 {:error, {:bad_option, {key, value}}}
      end
    end
  end

  describe "the function" do
    test "{:stop, acc} ends the fold with acc", %{barrel: barrel} do
      fun = fn %{"id" => id}, acc ->
        if id == "c", do: {:stop, [id | acc]}, else: {:ok, [id | acc]}
      end

      assert Barrel.fold_docs(barrel, fun, []) == {:ok, ["c", "b", "a"]}
    end

    test ":stop ends the fold with the accumulator it was given", %{barrel: barrel} do
      fun = fn %{"id" => id}, acc -> if id == "c", do: :stop, else: {:ok, [id | acc]} end
      assert Barrel.fold_docs(barrel, fun, []) == {:ok, ["b", "a"]}
    end

    test "any other return raises", %{barrel: barrel} do
      assert_raise ErlangError, "Erlang error: {:bad_fold_return, :next}", fn ->
        Barrel.fold_docs(barrel, fn _, _ -> :next end, [])
      end
    end

    test "must take two arguments", %{barrel: barrel} do
      assert Barrel.fold_docs(barrel, fn _ -> :stop end, []) == {:error, {:bad_arg, :fold_fun}}
      assert Barrel.fold_docs(barrel, :fun, []) == {:error, {:bad_arg, :fold_fun}}
    end
  end

  describe "more documents than a chunk" do
    setup %{barrel: barrel} do
      ids = for i <- 1..600, do: "k" <> String.pad_leading("#{i}", 4, "0")
      {:ok, _} = Barrel.save_docs(barrel, for(id <- ids, do: %{"id" => id}))
      %{ids: ids}
    end

    test "are all visited, in order", %{barrel: barrel, ids: ids} do
      assert fold_ids(barrel, start_key: "k") == ids
    end

    test "respect limit and end_key across chunks", %{barrel: barrel, ids: ids} do
      assert fold_ids(barrel, start_key: "k", limit: 513) == Enum.take(ids, 513)
      assert fold_ids(barrel, start_key: "k0100", end_key: "k0400") == Enum.slice(ids, 99..399)
    end

    test "stop early across chunks", %{barrel: barrel} do
      fun = fn _, n -> if n == 300, do: :stop, else: {:ok, n + 1} end
      assert Barrel.fold_docs(barrel, fun, 0, start_key: "k") == {:ok, 300}
    end
  end
end
