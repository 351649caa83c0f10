defmodule Barrel.ConflictsTest do
  # Revision histories and conflicts: writes with new_edits: false, as
  # replication makes them, and the fetch options that show the revision tree.
  use Barrel.Case, async: true

  @hash_a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  @hash_b "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
  @hash_c "cccccccccccccccccccccccccccccccc"

  # Builds the tree 1-a <- 2-c (winner) and 1-b (conflict) for document "d".
  defp conflicted!(barrel) do
    replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => "a"})
    replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"})

    replicate!(barrel, %{
      "id" => "d",
      "_rev" => "2-" <> @hash_c,
      "_revisions" => %{"start" => 2, "ids" => [@hash_c, @hash_a]},
      "v" => "c"
    })
  end

  defp replicate!(barrel, doc) do
    assert {:ok, id, rev} = Barrel.save_doc(barrel, doc, new_edits: false)
    assert {id, rev} == {doc["id"], doc["_rev"]}
  end

  describe "save_doc/3 with new_edits: false" do
    test "stores the revision given, without a parent", %{barrel: barrel} do
      replicate!(barrel, %{"id" => "d", "_rev" => "3-" <> @hash_a, "v" => 1})

      assert Barrel.fetch_doc(barrel, "d", revs: true) ==
               {:ok,
                %{
                  "id" => "d",
                  "_rev" => "3-" <> @hash_a,
                  "_revisions" => %{"start" => 3, "ids" => [@hash_a]},
                  "v" => 1
                }}
    end

    test "creates a conflict instead of refusing it", %{barrel: barrel} do
      conflicted!(barrel)

      assert Barrel.fetch_doc(barrel, "d", conflicts: true) ==
               {:ok,
                %{
                  "id" => "d",
                  "_rev" => "2-" <> @hash_c,
                  "_conflicts" => ["1-" <> @hash_b],
                  "v" => "c"
                }}
    end

    test "picks the highest hash among leaves of the same generation", %{barrel: barrel} do
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"})
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => "a"})
      assert {:ok, %{"_rev" => "1-" <> @hash_b, "v" => "b"}} = Barrel.fetch_doc(barrel, "d")
    end

    test "is idempotent", %{barrel: barrel} do
      doc = %{"id" => "d", "_rev" => "1-" <> @hash_a, "v" => 1}
      replicate!(barrel, doc)
      replicate!(barrel, doc)
      assert Barrel.fetch_doc(barrel, "d", conflicts: true) == {:ok, doc}
      assert {:ok, %{docs_count: 1}} = Barrel.barrel_infos(barrel)
    end

    test "stores deleted revisions", %{barrel: barrel} do
      replicate!(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_a, "_deleted" => true})
      assert Barrel.fetch_doc(barrel, "d") == {:error, :not_found}

      assert Barrel.fetch_doc(barrel, "d", open_revs: :all) ==
               {:ok, [{:ok, %{"id" => "d", "_rev" => "1-" <> @hash_a, "_deleted" => true}}]}
    end

    test "needs a revision", %{barrel: barrel} do
      assert Barrel.save_doc(barrel, %{"id" => "d"}, new_edits: false) ==
               {:error, {:bad_doc, :missing_rev}}
    end

    test "refuses a history that does not end at the revision", %{barrel: barrel} do
      doc = %{
        "id" => "d",
        "_rev" => "2-" <> @hash_c,
        "_revisions" => %{"start" => 3, "ids" => [@hash_c]}
      }

      assert Barrel.save_doc(barrel, doc, new_edits: false) ==
               {:error,
                {:bad_doc, {:bad_revisions, "_revisions does not start at _rev 2-" <> @hash_c}}}
    end

    test "refuses a malformed history", %{barrel: barrel} do
      doc = %{"id" => "d", "_rev" => "2-" <> @hash_c, "_revisions" => "1-" <> @hash_a}

      assert Barrel.save_doc(barrel, doc, new_edits: false) ==
               {:error, {:bad_doc, {:bad_revisions, "start must be a positive integer"}}}
    end

    test "applies to every document of save_docs/3", %{barrel: barrel} do
      docs = [
        %{"id" => "d", "_rev" => "1-" <> @hash_a},
        %{"id" => "d", "_rev" => "1-" <> @hash_b}
      ]

      assert Barrel.save_docs(barrel, docs, new_edits: false) ==
               {:ok, [{:ok, "d", "1-" <> @hash_a}, {:ok, "d", "1-" <> @hash_b}]}

      assert {:ok, %{"_conflicts" => ["1-" <> @hash_a]}} =
               Barrel.fetch_doc(barrel, "d", conflicts: true)
    end
  end

  describe "resolving a conflict" do
    test "deleting the losing leaf leaves one live revision", %{barrel: barrel} do
      conflicted!(barrel)
      assert {:ok, "d", _} = Barrel.delete_doc(barrel, "d", "1-" <> @hash_b)

      assert Barrel.fetch_doc(barrel, "d", conflicts: true) ==
               {:ok, %{"id" => "d", "_rev" => "2-" <> @hash_c, "v" => "c"}}
    end

    test "a leaf that is not the winner can be updated", %{barrel: barrel} do
      conflicted!(barrel)

      assert {:ok, "d", "2-" <> _ = rev} =
               Barrel.save_doc(barrel, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b2"})

      assert {:ok, [{:ok, %{"v" => "b2"}}]} = Barrel.fetch_doc(barrel, "d", open_revs: [rev])
    end
  end

  describe "fetch_doc/3 options" do
    test "revs: true adds the history, newest first", %{barrel: barrel} do
      rev1 = save!(barrel, %{"id" => "a", "v" => 1})
      rev2 = save!(barrel, %{"id" => "a", "_rev" => rev1, "v" => 2})
      ["1", hash1] = String.split(rev1, "-")
      ["2", hash2] = String.split(rev2, "-")

      assert Barrel.fetch_doc(barrel, "a", revs: true) ==
               {:ok,
                %{
                  "id" => "a",
                  "_rev" => rev2,
                  "_revisions" => %{"start" => 2, "ids" => [hash2, hash1]},
                  "v" => 2
                }}

      assert Barrel.fetch_doc(barrel, "a", revs: false) ==
               {:ok, %{"id" => "a", "_rev" => rev2, "v" => 2}}
    end

    test "conflicts: true adds nothing when there is no conflict", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a"})

      assert Barrel.fetch_doc(barrel, "a", conflicts: true) ==
               {:ok, %{"id" => "a", "_rev" => rev}}
    end

    test "rev: reads a leaf that is not the winner", %{barrel: barrel} do
      conflicted!(barrel)

      assert Barrel.fetch_doc(barrel, "d", rev: "1-" <> @hash_b) ==
               {:ok, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"}}
    end

    test "rev: does not read revisions that are no longer leaves", %{barrel: barrel} do
      conflicted!(barrel)
      assert Barrel.fetch_doc(barrel, "d", rev: "1-" <> @hash_a) == {:error, :not_found}
      assert Barrel.fetch_doc(barrel, "d", rev: "9-" <> @hash_a) == {:error, :not_found}
    end

    test "rev: refuses a malformed revision", %{barrel: barrel} do
      save!(barrel, %{"id" => "a"})
      assert Barrel.fetch_doc(barrel, "a", rev: "garbage") == {:error, {:bad_rev, "garbage"}}
    end

    test "open_revs: :all returns every leaf, deleted ones included", %{barrel: barrel} do
      conflicted!(barrel)
      {:ok, "d", tombstone} = Barrel.delete_doc(barrel, "d", "1-" <> @hash_b)

      assert Barrel.fetch_doc(barrel, "d", open_revs: :all) ==
               {:ok,
                [
                  {:ok, %{"id" => "d", "_rev" => tombstone, "_deleted" => true}},
                  {:ok, %{"id" => "d", "_rev" => "2-" <> @hash_c, "v" => "c"}}
                ]}
    end

    test "open_revs: [rev] returns the revisions asked for, in order", %{barrel: barrel} do
      conflicted!(barrel)

      assert Barrel.fetch_doc(barrel, "d",
               open_revs: ["2-" <> @hash_c, "1-" <> @hash_a, "1-" <> @hash_b]
             ) ==
               {:ok,
                [
                  {:ok, %{"id" => "d", "_rev" => "2-" <> @hash_c, "v" => "c"}},
                  {:missing, "1-" <> @hash_a},
                  {:ok, %{"id" => "d", "_rev" => "1-" <> @hash_b, "v" => "b"}}
                ]}

      assert Barrel.fetch_doc(barrel, "d", open_revs: []) == {:ok, []}
    end

    test "open_revs with revs: true adds each leaf's history", %{barrel: barrel} do
      conflicted!(barrel)

      assert Barrel.fetch_doc(barrel, "d", open_revs: ["2-" <> @hash_c], revs: true) ==
               {:ok,
                [
                  {:ok,
                   %{
                     "id" => "d",
                     "_rev" => "2-" <> @hash_c,
                     "_revisions" => %{"start" => 2, "ids" => [@hash_c, @hash_a]},
                     "v" => "c"
                   }}
                ]}
    end

    test "open_revs returns null as nil", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a", "v" => nil})

      assert Barrel.fetch_doc(barrel, "a", open_revs: :all) ==
               {:ok, [{:ok, %{"id" => "a", "_rev" => rev, "v" => nil}}]}
    end

    test "open_revs returns not_found for a document that does not exist", %{barrel: barrel} do
      assert Barrel.fetch_doc(barrel, "nope", open_revs: :all) == {:error, :not_found}
    end

    test "open_revs refuses malformed revisions", %{barrel: barrel} do
      save!(barrel, %{"id" => "a"})
      assert Barrel.fetch_doc(barrel, "a", open_revs: ["x"]) == {:error, {:bad_rev, "x"}}
    end
  end
end
