defmodule Barrel.DocsTest do
  # Saving, fetching, updating and deleting documents, and what a document may
  # hold.
  use Barrel.Case, async: true

  describe "save_doc/3 creating" do
    test "stores the document under its id at generation 1", %{barrel: barrel} do
      assert {:ok, "a", "1-" <> hash} = Barrel.save_doc(barrel, %{"id" => "a", "v" => 1})
      assert hash =~ ~r/\A[0-9a-f]{32}\z/

      assert Barrel.fetch_doc(barrel, "a") ==
               {:ok, %{"id" => "a", "_rev" => "1-" <> hash, "v" => 1}}
    end

    test "generates an id when there is none", %{barrel: barrel} do
      assert {:ok, id1, rev1} = Barrel.save_doc(barrel, %{"v" => 1})
      assert {:ok, id2, _rev2} = Barrel.save_doc(barrel, %{"v" => 1})
      assert id1 =~ ~r/\A[0-9a-f]{32}\z/
      assert id1 != id2
      assert Barrel.fetch_doc(barrel, id1) == {:ok, %{"id" => id1, "_rev" => rev1, "v" => 1}}
    end

    test "gives the same content the same revision", %{barrel: barrel} do
      {:ok, _, rev_a} = Barrel.save_doc(barrel, %{"id" => "a", "v" => [1, 2]})
      {:ok, _, rev_b} = Barrel.save_doc(barrel, %{"id" => "b", "v" => [1, 2]})
      {:ok, _, rev_c} = Barrel.save_doc(barrel, %{"id" => "c", "v" => [2, 1]})
      assert rev_a == rev_b
      assert rev_a != rev_c
    end

    test "refuses to create over a live document", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a", "v" => 1})
      assert Barrel.save_doc(barrel, %{"id" => "a", "v" => 2}) == {:error, :conflict}
      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev, "v" => 1}}
    end

    test "accepts ids of 1 to 1024 bytes of UTF-8 not starting with _", %{barrel: barrel} do
      for id <- ["a", "é-ü/🙂 x", "a_", String.duplicate("x", 1024)] do
        assert {:ok, ^id, _rev} = Barrel.save_doc(barrel, %{"id" => id})
        assert {:ok, %{"id" => ^id}} = Barrel.fetch_doc(barrel, id)
      end
    end

    test "refuses invalid ids", %{barrel: barrel} do
      long = String.duplicate("x", 1025)

      for id <- ["", "_a", "_design", long] do
        assert Barrel.save_doc(barrel, %{"id" => id}) == {:error, {:invalid_doc_id, id}}
      end

      assert Barrel.save_doc(barrel, %{"id" => 1}) == {:error, {:invalid_doc_id, 1}}
      assert Barrel.save_doc(barrel, %{"id" => <<255>>}) == {:error, {:invalid_doc_id, <<255>>}}
    end
  end

  describe "save_doc/3 updating" do
    test "replaces the document and moves to the next generation", %{barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "a", "v" => 1, "old" => true})

      assert {:ok, "a", "2-" <> _ = rev2} =
               Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev1, "v" => 2})

      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev2, "v" => 2}}
    end

    test "refuses a stale revision", %{barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "a", "v" => 1})
      rev2 = save!(barrel, %{"id" => "a", "_rev" => rev1, "v" => 2})

      assert Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev1, "v" => 3}) ==
               {:error, :conflict}

      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev2, "v" => 2}}
    end

    test "refuses a revision the document never had", %{barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "a", "v" => 1})
      other = save!(barrel, %{"id" => "b", "v" => 9})
      assert Barrel.save_doc(barrel, %{"id" => "a", "_rev" => other}) == {:error, :conflict}
      assert Barrel.save_doc(barrel, %{"id" => "new", "_rev" => rev1}) == {:error, :conflict}
    end

    test "refuses malformed revisions", %{barrel: barrel} do
      save!(barrel, %{"id" => "a"})

      for rev <- ["", "xx", "1-", "-abc", "0-abc", "a-abc", "1-xyz"] do
        assert Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev}) == {:error, {:bad_rev, rev}}
      end

      assert Barrel.save_doc(barrel, %{"id" => "a", "_rev" => 1}) == {:error, {:bad_rev, 1}}
    end
  end

  describe "delete_doc/3" do
    test "writes a tombstone on top of the current revision", %{barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "a", "v" => 1})
      assert {:ok, "a", "2-" <> _ = tombstone} = Barrel.delete_doc(barrel, "a", rev1)

      assert Barrel.fetch_doc(barrel, "a") == {:error, :not_found}

      assert Barrel.fetch_doc(barrel, "a", rev: tombstone) ==
               {:ok, %{"id" => "a", "_rev" => tombstone, "_deleted" => true}}
    end

    test "lets the document be created again, continuing its history", %{barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "a", "v" => 1})
      {:ok, "a", _tombstone} = Barrel.delete_doc(barrel, "a", rev1)

      assert {:ok, "a", "3-" <> _ = rev3} = Barrel.save_doc(barrel, %{"id" => "a", "v" => 2})
      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev3, "v" => 2}}
    end

    test "refuses a stale revision", %{barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "a", "v" => 1})
      rev2 = save!(barrel, %{"id" => "a", "_rev" => rev1, "v" => 2})
      assert Barrel.delete_doc(barrel, "a", rev1) == {:error, :conflict}
      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev2, "v" => 2}}
    end

    test "returns conflict for a document that does not exist", %{barrel: barrel} do
      assert Barrel.delete_doc(barrel, "nope", "1-967a00dff5e02add41819138abb3284d") ==
               {:error, :conflict}
    end

    test "refuses malformed ids and revisions", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a"})
      assert Barrel.delete_doc(barrel, "_a", rev) == {:error, {:invalid_doc_id, "_a"}}
      assert Barrel.delete_doc(barrel, 1, rev) == {:error, {:invalid_doc_id, 1}}
      assert Barrel.delete_doc(barrel, "a", "x") == {:error, {:bad_rev, "x"}}
      assert Barrel.delete_doc(barrel, "a", 1) == {:error, {:bad_rev, 1}}
    end
  end

  describe "fetch_doc/3" do
    test "returns not_found for a document that does not exist", %{barrel: barrel} do
      assert Barrel.fetch_doc(barrel, "nope") == {:error, :not_found}
    end

    test "refuses ids no document can have", %{barrel: barrel} do
      long = String.duplicate("x", 1025)

      for id <- ["", "_a", long] do
        assert Barrel.fetch_doc(barrel, id) == {:error, {:invalid_doc_id, id}}
      end
    end

    test "refuses ids that are not UTF-8 binaries", %{barrel: barrel} do
      assert Barrel.fetch_doc(barrel, 1) == {:error, {:invalid_doc_id, 1}}
      assert Barrel.fetch_doc(barrel, <<255>>) == {:error, {:invalid_doc_id, <<255>>}}
    end

    test "refuses what is not a handle" do
      assert Barrel.fetch_doc(:barrel, "a") == {:error, {:bad_arg, :barrel}}
      assert Barrel.save_doc(:barrel, %{}) == {:error, {:bad_arg, :barrel}}
      assert Barrel.delete_doc(:barrel, "a", "1-aa") == {:error, {:bad_arg, :barrel}}
    end
  end

  describe "values" do
    test "round-trip every JSON type", %{barrel: barrel} do
      doc = %{
        "id" => "all",
        "string" => "héllo 🙂",
        "empty" => "",
        "int" => -42,
        "max" => 9_223_372_036_854_775_807,
        "min" => -9_223_372_036_854_775_808,
        "float" => 1.5,
        "true" => true,
        "false" => false,
        "null" => nil,
        "list" => [1, "two", nil, [3], %{"four" => 4}],
        "map" => %{"nested" => %{"deeper" => nil}},
        "empty_list" => [],
        "empty_map" => %{}
      }

      rev = save!(barrel, doc)
      assert Barrel.fetch_doc(barrel, "all") == {:ok, Map.put(doc, "_rev", rev)}
    end

    test "take :null as null and return nil", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a", "v" => :null, "l" => [:null]})

      assert Barrel.fetch_doc(barrel, "a") ==
               {:ok, %{"id" => "a", "_rev" => rev, "v" => nil, "l" => [nil]}}
    end

    test "return null as the atom given in the :null option", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a", "v" => nil, "m" => %{"k" => [nil]}})

      assert Barrel.fetch_doc(barrel, "a", null: :null) ==
               {:ok, %{"id" => "a", "_rev" => rev, "v" => :null, "m" => %{"k" => [:null]}}}

      assert Barrel.fetch_doc(barrel, "a", null: :undefined) ==
               {:ok,
                %{"id" => "a", "_rev" => rev, "v" => :undefined, "m" => %{"k" => [:undefined]}}}
    end

    test "store an empty document", %{barrel: barrel} do
      assert {:ok, id, rev} = Barrel.save_doc(barrel, %{})
      assert Barrel.fetch_doc(barrel, id) == {:ok, %{"id" => id, "_rev" => rev}}
    end
  end

  describe "bad documents" do
    test "a document that is not a map", %{barrel: barrel} do
      for doc <- [[], [{"id", "a"}], "a", nil, 1] do
        assert Barrel.save_doc(barrel, doc) == {:error, {:bad_doc, :not_a_map}}
      end
    end

    test "keys that are not UTF-8 strings", %{barrel: barrel} do
      assert Barrel.save_doc(barrel, %{a: 1}) == {:error, {:bad_doc, {:invalid_key, "/a"}}}
      assert Barrel.save_doc(barrel, %{:id => "a"}) == {:error, {:bad_doc, {:invalid_key, "/id"}}}

      assert Barrel.save_doc(barrel, %{"a" => %{"b" => %{c: 1}}}) ==
               {:error, {:bad_doc, {:invalid_key, "/a/b/c"}}}

      assert Barrel.save_doc(barrel, %{<<255>> => 1}) ==
               {:error, {:bad_doc, {:invalid_key, "/<<255>>"}}}
    end

    test "values JSON cannot hold", %{barrel: barrel} do
      bad_values = [
        {1, 2},
        self(),
        make_ref(),
        :other_atom,
        <<255>>,
        <<1::size(3)>>,
        fn -> :ok end,
        9_223_372_036_854_775_807 * 4,
        -9_223_372_036_854_775_809
      ]

      for value <- bad_values do
        assert Barrel.save_doc(barrel, %{"a" => value}) ==
                 {:error, {:bad_doc, {:invalid_value, "/a"}}},
               "#{inspect(value)} accepted"
      end
    end

    test "give the path of a bad value deep in the document", %{barrel: barrel} do
      assert Barrel.save_doc(barrel, %{"a" => [1, %{"b" => {1}}]}) ==
               {:error, {:bad_doc, {:invalid_value, "/a/1/b"}}}
    end

    test "unknown fields starting with _", %{barrel: barrel} do
      assert Barrel.save_doc(barrel, %{"id" => "a", "_foo" => 1}) ==
               {:error, {:bad_doc, {:reserved_field, "_foo"}}}
    end

    test "_deleted that is not a boolean", %{barrel: barrel} do
      assert Barrel.save_doc(barrel, %{"id" => "a", "_deleted" => 1}) ==
               {:error, {:bad_doc, :bad_deleted}}
    end

    test "leave the barrel unchanged", %{barrel: barrel} do
      {:error, _} = Barrel.save_doc(barrel, %{"id" => "a", "v" => {1}})
      assert Barrel.fetch_doc(barrel, "a") == {:error, :not_found}
      assert {:ok, %{docs_count: 0, updated_seq: 0}} = Barrel.barrel_infos(barrel)
    end
  end

  describe "save_docs/3" do
    test "returns one result per document, in order", %{barrel: barrel} do
      rev_x = save!(barrel, %{"id" => "x"})

      docs = [
        %{"id" => "a", "v" => 1},
        %{"id" => "a", "v" => 2},
        %{"id" => "x"},
        %{"id" => "x", "_rev" => rev_x, "v" => 2},
        %{"id" => "_bad"},
        %{"id" => "b", "v" => {1}},
        :not_a_doc,
        %{"id" => "c", "_rev" => "nope"}
      ]

      assert {:ok,
              [
                {:ok, "a", "1-" <> _ = rev_a},
                {:error, :conflict},
                {:error, :conflict},
                {:ok, "x", "2-" <> _ = rev_x2},
                {:error, {:invalid_doc_id, "_bad"}},
                {:error, {:bad_doc, {:invalid_value, "/v"}}},
                {:error, {:bad_doc, :not_a_map}},
                {:error, {:bad_rev, "nope"}}
              ]} = Barrel.save_docs(barrel, docs)

      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev_a, "v" => 1}}
      assert Barrel.fetch_doc(barrel, "x") == {:ok, %{"id" => "x", "_rev" => rev_x2, "v" => 2}}
      assert fold_ids(barrel) == ["a", "x"]
    end

    test "generates ids for documents without one", %{barrel: barrel} do
      assert {:ok, [{:ok, id1, _}, {:ok, id2, _}]} = Barrel.save_docs(barrel, [%{}, %{}])
      assert id1 != id2
    end

    test "saves nothing for an empty list", %{barrel: barrel} do
      assert Barrel.save_docs(barrel, []) == {:ok, []}
      assert {:ok, %{updated_seq: 0}} = Barrel.barrel_infos(barrel)
    end

    test "refuses documents that are not a list", %{barrel: barrel} do
      assert Barrel.save_docs(barrel, %{"id" => "a"}) == {:error, {:bad_arg, :docs}}
    end
  end
end
