defmodule Barrel.QueryTest do
  # The path index from Elixir: query/5, find/3 and reindex/1, one describe
  # per kind of query, then the life of the index (updates, deletes,
  # conflicts, reindex) and every error.
  use Barrel.Case, async: true

  @talk_doc %{
    "id" => "ID",
    "locations" => [%{"country" => "France", "city" => "creil"}],
    "headquarter" => "France"
  }

  @hash_a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  @hash_b "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
  @hash_c "cccccccccccccccccccccccccccccccc"

  # Saves documents built as %{"id" => id, field => value} from {id, value} pairs.
  defp save_values!(barrel, field, pairs) do
    docs = for {id, value} <- pairs, do: %{"id" => id, field => value}
    {:ok, results} = Barrel.save_docs(barrel, docs)
    assert Enum.all?(results, &match?({:ok, _, _}, &1))
    :ok
  end

  # The ids `query/5` visits, in order.
  defp ids(barrel, path, opts \\ []) do
    {:ok, ids} = Barrel.query(barrel, path, fn doc, acc -> {:ok, [doc["id"] | acc]} end, [], opts)
    Enum.reverse(ids)
  end

  # The rows of `find/3` without documents: [{id, indexed value}].
  defp rows(barrel, query, opts \\ []) do
    {:ok, rows} = Barrel.find(barrel, query, Keyword.put(opts, :include_docs, false))

    Enum.map(rows, fn %{"id" => id, "value" => value} = row when map_size(row) == 2 ->
      {id, value}
    end)
  end

  defp replicate!(barrel, doc) do
    assert {:ok, id, rev} = Barrel.save_doc(barrel, doc, new_edits: false)
    assert {id, rev} == {doc["id"], doc["_rev"]}
    rev
  end

  describe "equality" do
    test "indexes the talk's document under every path to a scalar and its id", %{
      barrel: barrel
    } do
      rev = save!(barrel, @talk_doc)
      doc = Map.put(@talk_doc, "_rev", rev)

      for query <- [
            "$/locations/0/country/france",
            "$/locations/0/city/creil",
            "$/headquarter/france",
            "$/id/ID"
          ] do
        assert Barrel.find(barrel, query) == {:ok, [doc]}, query
      end

      assert Barrel.find(barrel, "$/locations/0/country/spain") == {:ok, []}
      assert Barrel.find(barrel, "$/locations/1/country/france") == {:ok, []}
      assert Barrel.find(barrel, "$/headquarter/creil") == {:ok, []}
    end

    test "matches strings case-insensitively, in the path or in :equal", %{barrel: barrel} do
      save!(barrel, @talk_doc)
      save!(barrel, %{"id" => "other", "headquarter" => "france"})

      for query <- ["$/headquarter/FRANCE", "$/headquarter/France", "$/headquarter/france"] do
        assert rows(barrel, query) == [{"ID", "france"}, {"other", "france"}], query
      end

      assert ids(barrel, "$/headquarter", equal: "FrAnCe") == ["ID", "other"]
      assert ids(barrel, ["headquarter"], equal: "FRANCE") == ["ID", "other"]
    end

    test "indexes ids lowercased like any other string", %{barrel: barrel} do
      save!(barrel, %{"id" => "ID"})
      save!(barrel, %{"id" => "id"})
      assert rows(barrel, "$/id/ID") == [{"ID", "id"}, {"id", "id"}]
      assert ids(barrel, "$/id", equal: "Id") == ["ID", "id"]
    end

    test "takes keys with / and ~ escaped in a binary path, as they are in a list", %{
      barrel: barrel
    } do
      save!(barrel, %{"id" => "d", "a/b" => %{"c~d" => "x/y"}})
      assert rows(barrel, "$/a~1b/c~0d/x~1y") == [{"d", "x/y"}]
      assert ids(barrel, "$/a~1b/c~0d", equal: "x/y") == ["d"]
      assert ids(barrel, ["a/b", "c~d"], equal: "x/y") == ["d"]
    end

    test "reads digits in a binary path as an array index, strings in a list as keys", %{
      barrel: barrel
    } do
      save!(barrel, %{"id" => "obj", "a" => %{"0" => "x"}})
      save!(barrel, %{"id" => "arr", "a" => ["x"]})
      assert ids(barrel, "$/a/0", equal: "x") == ["arr"]
      assert ids(barrel, ["a", 0], equal: "x") == ["arr"]
      assert ids(barrel, ["a", "0"], equal: "x") == ["obj"]
    end

    test "lists documents with the same value in id order", %{barrel: barrel} do
      save_values!(barrel, "v", [{"c", 1}, {"a", 1}, {"b", 1}])
      assert ids(barrel, "$/v", equal: 1) == ["a", "b", "c"]
    end
  end

  describe "numbers" do
    setup %{barrel: barrel} do
      save_values!(barrel, "n", [
        {"ten", 10},
        {"minus-half", -0.5},
        {"one", 1},
        {"one-float", 1.0},
        {"one-and-half", 1.5},
        {"zero", 0},
        {"minus-two", -2},
        {"big", 2.5e3},
        {"word", "10"}
      ])
    end

    test "sort integers and floats together, numerically", %{barrel: barrel} do
      assert rows(barrel, {"$/n", start_at: -1.0e300, end_at: 1.0e300}) == [
               {"minus-two", -2},
               {"minus-half", -0.5},
               {"zero", 0},
               {"one", 1},
               {"one-float", 1},
               {"one-and-half", 1.5},
               {"ten", 10},
               {"big", 2500}
             ]
    end

    test "compare an integer and the float it equals as the same value", %{barrel: barrel} do
      assert ids(barrel, "$/n", equal: 1) == ["one", "one-float"]
      assert ids(barrel, "$/n", equal: 1.0) == ["one", "one-float"]
      assert rows(barrel, "$/n/1") == [{"one", 1}, {"one-float", 1}]
      assert rows(barrel, "$/n/1.5") == [{"one-and-half", 1.5}]
      assert rows(barrel, "$/n/-0.5") == [{"minus-half", -0.5}]
      assert rows(barrel, "$/n/2500") == [{"big", 2500}]
    end

    test "keep a number and the string of its digits apart", %{barrel: barrel} do
      assert ids(barrel, "$/n", equal: 10) == ["ten"]
      assert ids(barrel, "$/n", equal: "10") == ["word"]
    end

    test "select a range, inclusive at both ends by default", %{barrel: barrel} do
      assert ids(barrel, "$/n", start_at: 0, end_at: 10) ==
               ["zero", "one", "one-float", "one-and-half", "ten"]
    end

    test "select a range with exclusive ends", %{barrel: barrel} do
      assert ids(barrel, "$/n", start_at: 0, end_at: 10, start_inclusive: false) ==
               ["one", "one-float", "one-and-half", "ten"]

      assert ids(barrel, "$/n", start_at: 0, end_at: 10, end_inclusive: false) ==
               ["zero", "one", "one-float", "one-and-half"]

      assert ids(barrel, "$/n",
               start_at: 1,
               end_at: 1.5,
               start_inclusive: false,
               end_inclusive: false
             ) == []

      assert ids(barrel, "$/n", start_at: 1.0, end_at: 1.5, start_inclusive: false) ==
               ["one-and-half"]
    end

    test "select a range open at one end, which runs on across the type order", %{
      barrel: barrel
    } do
      assert ids(barrel, "$/n", end_at: 0) == ["minus-two", "minus-half", "zero"]
      assert ids(barrel, "$/n", start_at: 10) == ["ten", "big", "word"]
      assert ids(barrel, "$/n", start_at: 10, end_at: "") == ["ten", "big"]
    end

    test "select nothing when the range is empty or inverted", %{barrel: barrel} do
      assert ids(barrel, "$/n", start_at: 10, end_at: 1) == []
      assert ids(barrel, "$/n", start_at: 10, end_at: 1, descending: true) == []
      assert ids(barrel, "$/n", start_at: 1, end_at: 1, end_inclusive: false) == []
    end
  end

  describe "large numbers" do
    test "integers beyond 2^53 keep their exact order among floats", %{barrel: barrel} do
      save_values!(barrel, "n", [
        {"i53", 9_007_199_254_740_993},
        {"f53", 9_007_199_254_740_992.0},
        {"imax", 9_223_372_036_854_775_807},
        {"imin", -9_223_372_036_854_775_808},
        {"umax", 18_446_744_073_709_551_615}
      ])

      assert ids(barrel, "$/n") == ["imin", "f53", "i53", "imax", "umax"]
      assert ids(barrel, "$/n", equal: 9_007_199_254_740_992) == ["f53"]
      assert ids(barrel, "$/n", equal: 18_446_744_073_709_551_615) == ["umax"]
    end

    test "an integral float near 2^64 is the integer it equals", %{barrel: barrel} do
      # 2^64 - 2048 is exact both as an integer and as a float.
      int = 18_446_744_073_709_549_568

      save_values!(barrel, "n", [
        {"int", int},
        {"float", int * 1.0},
        {"umax", 18_446_744_073_709_551_615},
        {"two-pow-64", 18_446_744_073_709_551_616.0}
      ])

      assert ids(barrel, "$/n", equal: int) == ["float", "int"]
      assert ids(barrel, "$/n", equal: int * 1.0) == ["float", "int"]
      assert ids(barrel, "$/n", start_at: int) == ["float", "int", "umax", "two-pow-64"]
    end
  end

  describe "booleans and null" do
    setup %{barrel: barrel} do
      save_values!(barrel, "v", [
        {"str", "true"},
        {"num", 0},
        {"yes", true},
        {"no", false},
        {"none", nil}
      ])
    end

    test "match by equality", %{barrel: barrel} do
      assert ids(barrel, "$/v", equal: true) == ["yes"]
      assert ids(barrel, "$/v", equal: false) == ["no"]
      assert ids(barrel, "$/v", equal: nil) == ["none"]
      assert ids(barrel, "$/v", equal: :null) == ["none"]
      assert ids(barrel, "$/v", equal: "true") == ["str"]
    end

    test "are spelled null, true and false in the one-string form", %{barrel: barrel} do
      assert rows(barrel, "$/v/true") == [{"yes", true}]
      assert rows(barrel, "$/v/false") == [{"no", false}]
      assert rows(barrel, "$/v/null") == [{"none", nil}]
    end

    test "sort null < false < true < numbers < strings", %{barrel: barrel} do
      assert ids(barrel, "$/v") == ["none", "no", "yes", "num", "str"]
      assert ids(barrel, "$/v", start_at: false, end_at: 0) == ["no", "yes", "num"]
    end

    test "come back as nil, or as the :null atom asked for", %{barrel: barrel} do
      assert {:ok, [%{"id" => "none", "v" => nil}]} = Barrel.find(barrel, "$/v/null")
      assert {:ok, [%{"v" => :null}]} = Barrel.find(barrel, "$/v/null", null: :null)
      assert {:ok, [%{"v" => :null}]} = Barrel.find(barrel, {"$/v", equal: nil, null: :null})

      assert {:ok, [%{"v" => :none}]} =
               Barrel.find(barrel, {"$/v", equal: nil, null: :null}, null: :none)

      assert Barrel.query(barrel, "$/v", &{:ok, [&1 | &2]}, [], equal: nil, null: :null) ==
               {:ok, [%{"id" => "none", "_rev" => rev(barrel, "none"), "v" => :null}]}

      assert rows(barrel, {"$/v", equal: nil}, null: :null) == [{"none", :null}]
    end
  end

  describe "unicode strings" do
    setup %{barrel: barrel} do
      save_values!(barrel, "w", [
        {"ete", "Été"},
        {"ca", "ÇA"},
        {"zebra", "Zebra"},
        {"apple", "apple"},
        {"tokyo", "東京"}
      ])
    end

    test "match lowercased, whatever the case asked", %{barrel: barrel} do
      assert rows(barrel, "$/w/été") == [{"ete", "été"}]
      assert rows(barrel, "$/w/ÉTÉ") == [{"ete", "été"}]
      assert ids(barrel, "$/w", equal: "ça") == ["ca"]
      assert ids(barrel, "$/w", equal: "東京") == ["tokyo"]
    end

    test "keep their original case in the document", %{barrel: barrel} do
      assert {:ok, [%{"id" => "ete", "w" => "Été"}]} = Barrel.find(barrel, "$/w/été")
    end

    test "sort by the UTF-8 bytes of their lowercase form", %{barrel: barrel} do
      assert ids(barrel, "$/w") == ["apple", "zebra", "ca", "ete", "tokyo"]
    end

    test "match by prefix lowercased", %{barrel: barrel} do
      assert ids(barrel, "$/w", prefix: "ÉT") == ["ete"]
      assert ids(barrel, "$/w", prefix: "東") == ["tokyo"]
    end
  end

  describe "nested arrays" do
    setup %{barrel: barrel} do
      save!(barrel, %{"id" => "m", "a" => [[1, "X"], [3, "y"]]})
      save!(barrel, %{"id" => "n", "a" => [[3, "x"]]})
      :ok
    end

    test "index each element by its indexes", %{barrel: barrel} do
      assert rows(barrel, {"$/a/0/1", []}) == [{"m", "x"}, {"n", "x"}]
      assert rows(barrel, "$/a/0/1/X") == [{"m", "x"}, {"n", "x"}]
      assert rows(barrel, "$/a/1/0/3") == [{"m", 3}]
      assert ids(barrel, ["a", 1, 1], equal: "Y") == ["m"]
      assert ids(barrel, "$/a/2/0") == []
    end

    test "match any index with *, at any depth, in index order", %{barrel: barrel} do
      # n's 3 is at a/0/0, m's at a/1/0: the array index sorts before the id.
      assert rows(barrel, "$/a/*/0/3") == [{"n", 3}, {"m", 3}]
      assert ids(barrel, "$/a/*/*", equal: 3) == ["n", "m"]
      assert ids(barrel, ["a", :*, 1], equal: "y") == ["m"]
      assert ids(barrel, ["a", 0, :*], equal: "x") == ["m", "n"]
    end
  end

  describe "the * wildcard" do
    test "matches the talk's query at any array index", %{barrel: barrel} do
      save!(barrel, @talk_doc)

      save!(barrel, %{
        "id" => "two",
        "locations" => [%{"country" => "Spain"}, %{"country" => "France"}]
      })

      assert rows(barrel, "$/locations/*/country/france") == [{"ID", "france"}, {"two", "france"}]
      assert rows(barrel, "$/locations/*/country/spain") == [{"two", "spain"}]
    end

    test "lists by array index, then value, then id, a document once", %{barrel: barrel} do
      save!(barrel, %{"id" => "d", "tags" => ["b", "A", "b", "c"]})
      save!(barrel, %{"id" => "e", "tags" => ["z", "a"]})

      # tags/0: d "b", e "z"; tags/1: d "a", e "a"; tags/2: d "b"; tags/3: d "c".
      assert rows(barrel, {"$/tags/*", []}) == [{"d", "b"}, {"e", "z"}]
      assert rows(barrel, {"$/tags/*", equal: "a"}) == [{"d", "a"}, {"e", "a"}]
      assert rows(barrel, {"$/tags/*", equal: "b"}) == [{"d", "b"}]
      assert rows(barrel, {"$/tags/*", start_at: "c"}) == [{"e", "z"}, {"d", "c"}]
      assert rows(barrel, {"$/tags/*", []}, descending: true) == [{"d", "c"}, {"e", "a"}]
    end

    test "matches each document once across chunks of rows", %{barrel: barrel} do
      ids = for i <- 1..300, do: "d#{String.pad_leading("#{i}", 3, "0")}"
      {:ok, _} = Barrel.save_docs(barrel, for(id <- ids, do: %{"id" => id, "t" => [1, 1, 2]}))
      assert ids(barrel, "$/t/*") == ids
      assert ids(barrel, "$/t/*", start_at: 1) == ids
      assert ids(barrel, "$/t/*", descending: true) == Enum.reverse(ids)
    end

    test "matches array indexes only, not object keys", %{barrel: barrel} do
      save!(barrel, %{"id" => "obj", "locations" => %{"home" => %{"country" => "France"}}})
      assert ids(barrel, "$/locations/*/country", equal: "france") == []
      assert ids(barrel, "$/locations/home/country", equal: "france") == ["obj"]
    end

    test "is an object key when given as the string \"*\" in a list", %{barrel: barrel} do
      save!(barrel, %{"id" => "star", "a" => %{"*" => "x"}})
      save!(barrel, %{"id" => "arr", "a" => ["x"]})
      assert ids(barrel, ["a", "*"], equal: "x") == ["star"]
      assert ids(barrel, ["a", :*], equal: "x") == ["arr"]
    end
  end

  describe "prefix" do
    setup %{barrel: barrel} do
      save_values!(barrel, "city", [
        {"paris", "Paris"},
        {"pau", "PAU"},
        {"parma", "parma"},
        {"lyon", "Lyon"},
        {"number", 42}
      ])
    end

    test "matches strings starting with it, lowercased", %{barrel: barrel} do
      assert ids(barrel, "$/city", prefix: "par") == ["paris", "parma"]
      assert ids(barrel, "$/city", prefix: "PA") == ["paris", "parma", "pau"]
      assert ids(barrel, "$/city", prefix: "parisx") == []
      assert ids(barrel, "$/city", prefix: "pa", descending: true) == ["pau", "parma", "paris"]
    end

    test "matches every string, and no other value, when empty", %{barrel: barrel} do
      assert ids(barrel, "$/city", prefix: "") == ["lyon", "paris", "parma", "pau"]
    end
  end

  describe "limit, descending and stopping" do
    setup %{barrel: barrel} do
      save_values!(barrel, "n", for(i <- 1..5, do: {"d#{i}", i}))
    end

    test "limit returns the first n matches", %{barrel: barrel} do
      assert ids(barrel, "$/n", limit: 2) == ["d1", "d2"]
      assert ids(barrel, "$/n", limit: 0) == []
      assert ids(barrel, "$/n", limit: 10) == ["d1", "d2", "d3", "d4", "d5"]
      assert ids(barrel, "$/n", limit: :infinity) == ["d1", "d2", "d3", "d4", "d5"]

      assert Barrel.find(barrel, {"$/n", start_at: 2}, limit: 2, include_docs: false) ==
               {:ok, [%{"id" => "d2", "value" => 2}, %{"id" => "d3", "value" => 3}]}
    end

    test "descending walks from the highest value", %{barrel: barrel} do
      assert ids(barrel, "$/n", descending: true) == ["d5", "d4", "d3", "d2", "d1"]
      assert ids(barrel, "$/n", descending: true, limit: 2) == ["d5", "d4"]
      assert ids(barrel, "$/n", descending: true, start_at: 2, end_at: 4) == ["d4", "d3", "d2"]
      assert rows(barrel, "$/n/3", descending: true) == [{"d3", 3}]
    end

    test "limit and descending hold across chunks of rows", %{barrel: barrel} do
      save_values!(barrel, "m", for(i <- 1..600, do: {"m#{i}", i}))
      assert ids(barrel, "$/m", limit: 257) == for(i <- 1..257, do: "m#{i}")
      assert ids(barrel, "$/m", limit: 512) == for(i <- 1..512, do: "m#{i}")
      assert ids(barrel, "$/m", descending: true) == for(i <- 600..1//-1, do: "m#{i}")
    end

    test "the function stops the query with {:stop, acc} or :stop", %{barrel: barrel} do
      assert Barrel.query(barrel, "$/n", fn doc, acc -> {:stop, [doc["id"] | acc]} end, []) ==
               {:ok, ["d1"]}

      two = fn
        _doc, [_, _] = acc -> {:stop, acc}
        doc, acc -> {:ok, [doc["id"] | acc]}
      end

      assert Barrel.query(barrel, "$/n", two, []) == {:ok, ["d2", "d1"]}
      assert Barrel.query(barrel, "$/n", fn _doc, _acc -> :stop end, :start) == {:ok, :start}
    end

    test "a function returning something else raises", %{barrel: barrel} do
      assert_raise ErlangError, ~r/bad_fold_return/, fn ->
        Barrel.query(barrel, "$/n", fn _doc, acc -> acc end, [])
      end
    end
  end

  describe "include_docs" do
    test "returns the winning documents by default", %{barrel: barrel} do
      rev = save!(barrel, @talk_doc)

      assert Barrel.find(barrel, {"$/headquarter", []}) ==
               {:ok, [Map.put(@talk_doc, "_rev", rev)]}
    end

    test "false returns the id and the indexed value", %{barrel: barrel} do
      save!(barrel, @talk_doc)

      assert Barrel.find(barrel, "$/headquarter/france", include_docs: false) ==
               {:ok, [%{"id" => "ID", "value" => "france"}]}

      assert Barrel.query(barrel, "$/locations/*/city", &{:ok, [&1 | &2]}, [], include_docs: false) ==
               {:ok, [%{"id" => "ID", "value" => "creil"}]}
    end
  end

  describe "updates" do
    test "an update that removes a path stops the document matching", %{barrel: barrel} do
      rev = save!(barrel, @talk_doc)
      save!(barrel, %{"id" => "ID", "_rev" => rev, "headquarter" => "France"})

      assert Barrel.find(barrel, "$/locations/0/country/france") == {:ok, []}
      assert Barrel.find(barrel, "$/locations/*/country/france") == {:ok, []}
      assert ids(barrel, "$/locations/0/city") == []
      assert rows(barrel, "$/headquarter/france") == [{"ID", "france"}]
    end

    test "an update that changes a value moves the document", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "d", "n" => 1, "tags" => ["a", "b"]})
      save!(barrel, %{"id" => "d", "_rev" => rev, "n" => 2, "tags" => ["b"]})

      assert ids(barrel, "$/n", equal: 1) == []
      assert rows(barrel, "$/n/2") == [{"d", 2}]
      assert rows(barrel, {"$/tags/*", []}) == [{"d", "b"}]
      assert rows(barrel, "$/tags/0/b") == [{"d", "b"}]
      assert rows(barrel, "$/tags/1/b") == []
    end

    test "a path that becomes an object or an array is no longer a scalar", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "d", "v" => "x"})
      save!(barrel, %{"id" => "d", "_rev" => rev, "v" => %{"w" => "x"}})
      assert ids(barrel, "$/v") == []
      assert ids(barrel, "$/v/w", equal: "x") == ["d"]
    end
  end

  describe "deletes" do
    test "a deleted document disappears, and comes back when created again", %{barrel: barrel} do
      rev = save!(barrel, @talk_doc)
      save!(barrel, %{"id" => "other", "headquarter" => "france"})
      {:ok, "ID", _tombstone} = Barrel.delete_doc(barrel, "ID", rev)

      assert ids(barrel, "$/headquarter") == ["other"]
      assert Barrel.find(barrel, "$/id/ID") == {:ok, []}
      assert Barrel.find(barrel, "$/locations/*/country/france") == {:ok, []}

      save!(barrel, %{"id" => "ID", "headquarter" => "Spain"})
      assert rows(barrel, "$/id/ID") == [{"ID", "id"}]
      assert rows(barrel, {"$/headquarter", []}) == [{"other", "france"}, {"ID", "spain"}]
    end
  end

  describe "conflicts" do
    test "only the winning revision is indexed", %{barrel: barrel} do
      # 1-a and 1-b conflict: 1-b wins on its higher hash.
      {:ok, [{:ok, "d", _}, {:ok, "d", _}]} =
        Barrel.save_docs(
          barrel,
          [
            %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => "a"},
            %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"}
          ],
          new_edits: false
        )

      assert {:ok, %{"_rev" => "1-" <> @hash_b, "_conflicts" => ["1-" <> @hash_a]}} =
               Barrel.fetch_doc(barrel, "d", conflicts: true)

      assert rows(barrel, {"$/v", []}) == [{"d", "b"}]

      # 2-c extends 1-a and wins on its generation.
      {:ok, [{:ok, "d", _}]} =
        Barrel.save_docs(
          barrel,
          [
            %{
              "id" => "d",
              "_rev" => "2-" <> @hash_c,
              "_revisions" => %{"start" => 2, "ids" => [@hash_c, @hash_a]},
              "v" => "c"
            }
          ],
          new_edits: false
        )

      assert rows(barrel, {"$/v", []}) == [{"d", "c"}]
      assert rows(barrel, "$/id/d") == [{"d", "d"}]
    end

    test "a losing revision written later changes nothing", %{barrel: barrel} do
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"})
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => "a", "only_a" => 1})
      assert rows(barrel, {"$/v", []}) == [{"d", "b"}]
      assert ids(barrel, "$/only_a") == []
    end

    test "deleting the winner indexes the revision that wins next", %{barrel: barrel} do
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => "a"})
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"})
      {:ok, "d", _tombstone} = Barrel.delete_doc(barrel, "d", "1-" <> @hash_b)

      assert {:ok, %{"_rev" => "1-" <> @hash_a}} = Barrel.fetch_doc(barrel, "d")
      assert rows(barrel, {"$/v", []}) == [{"d", "a"}]
      assert {:ok, [%{"_rev" => "1-" <> @hash_a, "v" => "a"}]} = Barrel.find(barrel, "$/v/a")
    end

    test "a replicated tombstone over the winner does the same", %{barrel: barrel} do
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => "a"})
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"})

      replicate!(barrel, %{
        "id" => "d",
        "_rev" => "2-" <> @hash_c,
        "_revisions" => %{"start" => 2, "ids" => [@hash_c, @hash_b]},
        "_deleted" => true
      })

      assert rows(barrel, {"$/v", []}) == [{"d", "a"}]
    end
  end

  describe "snapshots" do
    test "a query does not see writes made while it runs", %{barrel: barrel} do
      # More rows than one chunk, so that the writes happen between chunks.
      save_values!(barrel, "n", for(i <- 1..600, do: {"d#{i}", i}))
      rev599 = rev(barrel, "d599")
      rev600 = rev(barrel, "d600")

      # On the first row: add a match, delete one, and move one out of the range.
      write_first = fn
        doc, {:before, ids} ->
          save!(barrel, %{"id" => "late", "n" => 1000})
          {:ok, "d600", _} = Barrel.delete_doc(barrel, "d600", rev600)
          save!(barrel, %{"id" => "d599", "_rev" => rev599, "n" => -1})
          {:ok, {:after, [doc["id"] | ids]}}

        doc, {:after, ids} ->
          {:ok, {:after, [doc["id"] | ids]}}
      end

      assert {:ok, {:after, seen}} = Barrel.query(barrel, "$/n", write_first, {:before, []})
      assert Enum.reverse(seen) == for(i <- 1..600, do: "d#{i}")

      # A new query sees them.
      assert ids(barrel, "$/n", start_at: 599) == ["late"]
      assert ids(barrel, "$/n", end_at: 0) == ["d599"]
    end
  end

  describe "barrels" do
    test "a query sees only the documents of its barrel", %{barrel: barrel} do
      other_name = unique_name()
      :ok = Barrel.create_barrel(other_name)
      {:ok, other} = Barrel.open(other_name)
      save!(barrel, %{"id" => "mine", "v" => 1})
      save!(other, %{"id" => "theirs", "v" => 1})

      assert rows(barrel, "$/v/1") == [{"mine", 1}]
      assert rows(other, "$/v/1") == [{"theirs", 1}]
    end

    test "a barrel created again under a deleted one's name starts with no entries", %{
      barrel: barrel,
      name: name
    } do
      save!(barrel, %{"id" => "ghost", "v" => 1})
      :ok = Barrel.delete_barrel(name)
      :ok = Barrel.create_barrel(name)
      {:ok, again} = Barrel.open(name)

      assert ids(again, "$/v") == []
      assert ids(again, "$/id") == []
    end
  end

  describe "reindex/1" do
    test "returns the number of live documents and leaves the answers as they were", %{
      barrel: barrel
    } do
      rev = save!(barrel, @talk_doc)
      save_values!(barrel, "n", [{"a", 1}, {"b", 2.5}, {"c", "Été"}, {"e", nil}])
      {:ok, "a", _} = Barrel.delete_doc(barrel, "a", rev(barrel, "a"))
      rev_id2 = save!(barrel, %{"id" => "ID", "_rev" => rev, "headquarter" => "Spain"})
      replicate!(barrel, %{"id" => "x", "_rev" => "1-" <> @hash_a, "v" => "a"})
      replicate!(barrel, %{"id" => "x", "_rev" => "1-" <> @hash_b, "v" => "b"})

      queries = [
        {"$/n", []},
        {"$/n", descending: true},
        {"$/v", []},
        {"$/id", []},
        {"$/headquarter", []},
        {"$/locations/*/country", []},
        {"$/n", prefix: "ét"}
      ]

      before = for q <- queries, do: rows(barrel, q)
      assert Barrel.reindex(barrel) == {:ok, 5}
      assert for(q <- queries, do: rows(barrel, q)) == before

      assert before == [
               [{"e", nil}, {"b", 2.5}, {"c", "été"}],
               [{"c", "été"}, {"b", 2.5}, {"e", nil}],
               [{"x", "b"}],
               [{"b", "b"}, {"c", "c"}, {"e", "e"}, {"ID", "id"}, {"x", "x"}],
               [{"ID", "spain"}],
               [],
               [{"c", "été"}]
             ]

      assert {:ok, [%{"_rev" => ^rev_id2}]} = Barrel.find(barrel, "$/headquarter/spain")
      assert {:ok, %{docs_count: 5}} = Barrel.barrel_infos(barrel)
    end

    test "of an empty barrel indexes nothing", %{barrel: barrel} do
      assert Barrel.reindex(barrel) == {:ok, 0}
      assert ids(barrel, "$/id") == []
    end
  end

  describe "limits" do
    test "strings longer than 256 bytes are stored but not indexed", %{barrel: barrel} do
      fits = String.duplicate("a", 256)
      too_long = String.duplicate("b", 257)
      save_values!(barrel, "s", [{"fits", fits}, {"long", too_long}])

      assert ids(barrel, "$/s") == ["fits"]
      assert ids(barrel, "$/s", equal: fits) == ["fits"]
      assert {:ok, %{"s" => ^too_long}} = Barrel.fetch_doc(barrel, "long")
    end

    test "a document with more than 10000 scalars is refused, not indexed in part", %{
      barrel: barrel
    } do
      doc = Map.new(1..10_001, fn i -> {"k#{i}", i} end) |> Map.put("id", "many")

      assert Barrel.save_doc(barrel, doc) ==
               {:error, {:bad_doc, {:too_large, "more than 10000 indexed values"}}}

      assert ids(barrel, "$/k1") == []
      assert ids(barrel, "$/id") == []
    end

    test "empty objects and arrays have no entry", %{barrel: barrel} do
      save!(barrel, %{"id" => "d", "o" => %{}, "a" => []})
      assert ids(barrel, "$/o") == []
      assert ids(barrel, "$/a") == []
      assert ids(barrel, "$/a/*") == []
      assert rows(barrel, "$/id/d") == [{"d", "d"}]
    end
  end

  describe "errors" do
    setup %{barrel: barrel} do
      save!(barrel, %{"id" => "d", "n" => 1})
      :ok
    end

    test "a bad path", %{barrel: barrel} do
      collect = &{:ok, [&1 | &2]}

      assert Barrel.query(barrel, "$//x", collect, []) ==
               {:error, {:bad_query, ~S'empty segment in "$//x"'}}

      assert Barrel.find(barrel, "$//x/1") ==
               {:error, {:bad_query, ~S'empty segment in "$//x"'}}

      assert Barrel.find(barrel, {"$//x", equal: 1}) ==
               {:error, {:bad_query, ~S'empty segment in "$//x"'}}

      assert {:error, {:bad_query, _}} = Barrel.query(barrel, "$/a/99999999999", collect, [])
      assert {:error, {:bad_query, _}} = Barrel.query(barrel, ["a", -1], collect, [])
      assert {:error, {:bad_query, _}} = Barrel.query(barrel, ["a", :any], collect, [])
      assert {:error, {:bad_query, _}} = Barrel.query(barrel, ["a", 1.5], collect, [])
      assert {:error, {:bad_query, _}} = Barrel.query(barrel, ["a" | "b"], collect, [])
      assert {:error, {:bad_query, _}} = Barrel.query(barrel, :n, collect, [])
    end

    test "a one-string query without a value", %{barrel: barrel} do
      assert {:error, {:bad_query, _}} = Barrel.find(barrel, "$/n/")
      assert {:error, {:bad_query, _}} = Barrel.find(barrel, "n")
    end

    test "a value that is not a scalar", %{barrel: barrel} do
      collect = &{:ok, [&1 | &2]}

      for opt <- [:equal, :start_at, :end_at], value <- [[1], %{"a" => 1}, :atom, {1}] do
        assert Barrel.query(barrel, "$/n", collect, [], [{opt, value}]) ==
                 {:error, {:bad_option, {opt, value}}}
      end

      assert Barrel.find(barrel, {"$/n", equal: [1]}) == {:error, {:bad_option, {:equal, [1]}}}
      assert {:error, {:bad_query, _}} = Barrel.query(barrel, "$/n", collect, [], equal: <<255>>)

      assert {:error, {:bad_query, _}} =
               Barrel.query(barrel, "$/n", collect, [], start_at: Integer.pow(2, 70))
    end

    test "selections that exclude each other", %{barrel: barrel} do
      why = "equal, prefix and start_at/end_at exclude each other"
      collect = &{:ok, [&1 | &2]}

      for opts <- [
            [equal: 1, prefix: "a"],
            [equal: 1, start_at: 0],
            [prefix: "a", end_at: "b"],
            [equal: 1, prefix: "a", start_at: 0, end_at: 2]
          ] do
        assert Barrel.query(barrel, "$/n", collect, [], opts) == {:error, {:bad_query, why}}
        assert Barrel.find(barrel, {"$/n", opts}) == {:error, {:bad_query, why}}
      end

      # The one-string form already has its value.
      assert Barrel.find(barrel, "$/n/1", equal: 1) ==
               {:error, {:bad_query, "the value is in the path: no selection options"}}

      assert {:error, {:bad_query, _}} = Barrel.find(barrel, "$/n/1", start_at: 1)
    end

    test "options of the wrong type or unknown", %{barrel: barrel} do
      collect = &{:ok, [&1 | &2]}

      for {key, value} <- [
            prefix: 1,
            start_inclusive: "yes",
            end_inclusive: nil,
            limit: -1,
            limit: 1.5,
            descending: 1,
            include_docs: :no,
            null: "null",
            unknown: true
          ] do
        assert Barrel.query(barrel, "$/n", collect, [], [{key, value}]) ==
                 {:error, {:bad_option, {key, value}}}

        assert Barrel.find(barrel, {"$/n", [{key, value}]}) ==
                 {:error, {:bad_option, {key, value}}}

        assert Barrel.find(barrel, {"$/n", []}, [{key, value}]) ==
                 {:error, {:bad_option, {key, value}}}
      end

      assert Barrel.find(barrel, "$/n/1", limit: -1) == {:error, {:bad_option, {:limit, -1}}}
    end

    test "options that are not a keyword list", %{barrel: barrel} do
      collect = &{:ok, [&1 | &2]}

      for opts <- [%{limit: 1}, [:limit], [{"limit", 1}], :limit, "limit"] do
        assert Barrel.query(barrel, "$/n", collect, [], opts) == {:error, {:bad_option, opts}}
        assert Barrel.find(barrel, "$/n/1", opts) == {:error, {:bad_option, opts}}
        assert Barrel.find(barrel, {"$/n", opts}) == {:error, {:bad_option, opts}}
        assert Barrel.find(barrel, {"$/n", []}, opts) == {:error, {:bad_option, opts}}
      end
    end

    test "a query that is neither a string nor {path, opts}", %{barrel: barrel} do
      assert Barrel.find(barrel, 42) == {:error, {:bad_query, 42}}
      assert Barrel.find(barrel, {"$/n", [], []}) == {:error, {:bad_query, {"$/n", [], []}}}
    end

    test "a function that does not take two arguments", %{barrel: barrel} do
      assert Barrel.query(barrel, "$/n", fn _ -> :ok end, []) == {:error, {:bad_arg, :fold_fun}}
      assert Barrel.query(barrel, "$/n", nil, []) == {:error, {:bad_arg, :fold_fun}}
    end

    test "a closed handle", %{barrel: barrel} do
      :ok = Barrel.close(barrel)
      assert Barrel.query(barrel, "$/n", &{:ok, [&1 | &2]}, []) == {:error, :closed}
      assert Barrel.find(barrel, "$/n/1") == {:error, :closed}
      assert Barrel.find(barrel, {"$/n", equal: 1}) == {:error, :closed}
      assert Barrel.reindex(barrel) == {:error, :closed}
    end

    test "a handle on a deleted barrel", %{barrel: barrel, name: name} do
      :ok = Barrel.delete_barrel(name)
      assert Barrel.find(barrel, "$/n/1") == {:error, :not_found}
      assert Barrel.reindex(barrel) == {:error, :not_found}
    end

    test "a handle that is not a barrel" do
      assert Barrel.query(:nope, "$/n", &{:ok, [&1 | &2]}, []) == {:error, {:bad_arg, :barrel}}
      assert Barrel.find(make_ref(), "$/n/1") == {:error, {:bad_arg, :barrel}}
      assert Barrel.reindex("name") == {:error, {:bad_arg, :barrel}}
    end
  end

  defp rev(barrel, id) do
    {:ok, %{"_rev" => rev}} = Barrel.fetch_doc(barrel, id)
    rev
  end
end
