defmodule Barrel.OptionsTest do
  # Options are keyword lists: anything else, and any unknown or ill-typed
  # option, is refused with {:error, {:bad_option, _}} and never raises.
  use Barrel.Case, async: true

  @fold_fun &__MODULE__.count/2
  def count(_doc, n), do: {:ok, n + 1}

  describe "options that are not a keyword list" do
    for opts <- [%{}, %{revs: true}, [:revs], [{"revs", true}], :revs, "revs", nil, 1] do
      @opts opts

      test "#{inspect(opts)} is refused everywhere", %{barrel: barrel} do
        assert Barrel.save_doc(barrel, %{"id" => "a"}, @opts) == {:error, {:bad_option, @opts}}
        assert Barrel.save_docs(barrel, [%{"id" => "a"}], @opts) == {:error, {:bad_option, @opts}}
        assert Barrel.fetch_doc(barrel, "a", @opts) == {:error, {:bad_option, @opts}}
        assert Barrel.fold_docs(barrel, @fold_fun, 0, @opts) == {:error, {:bad_option, @opts}}
        assert Barrel.fetch_doc(barrel, "a") == {:error, :not_found}
      end
    end
  end

  describe "save options" do
    test "new_edits must be a boolean", %{barrel: barrel} do
      assert Barrel.save_doc(barrel, %{"id" => "a"}, new_edits: 1) ==
               {:error, {:bad_option, {:new_edits, 1}}}

      assert Barrel.save_docs(barrel, [%{"id" => "a"}], new_edits: nil) ==
               {:error, {:bad_option, {:new_edits, nil}}}
    end

    test "new_edits: true is the default", %{barrel: barrel} do
      assert {:ok, "a", "1-" <> _} = Barrel.save_doc(barrel, %{"id" => "a"}, new_edits: true)
      assert Barrel.save_doc(barrel, %{"id" => "a"}, new_edits: true) == {:error, :conflict}
    end

    test "unknown options are refused", %{barrel: barrel} do
      assert Barrel.save_doc(barrel, %{"id" => "a"}, sync: true) ==
               {:error, {:bad_option, {:sync, true}}}

      assert Barrel.save_docs(barrel, [], all_or_nothing: true) ==
               {:error, {:bad_option, {:all_or_nothing, true}}}
    end
  end

  describe "fetch options" do
    setup %{barrel: barrel} do
      save!(barrel, %{"id" => "a"})
      :ok
    end

    test "ill-typed values are refused", %{barrel: barrel} do
      for {key, value} <- [
            rev: 1,
            rev: nil,
            revs: 1,
            conflicts: "true",
            open_revs: :some,
            open_revs: [1],
            open_revs: "1-aa",
            null: "null",
            unknown: true
          ] do
        assert Barrel.fetch_doc(barrel, "a", [{key, value}]) ==
                 {:error, {:bad_option, {key, value}}}
      end
    end
  end

  describe "a repeated option" do
    test "keeps its first value, as Keyword.get/2 does", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a", "v" => nil})

      assert Barrel.fetch_doc(barrel, "a", null: :none, null: :null) ==
               {:ok, %{"id" => "a", "_rev" => rev, "v" => :none}}

      assert fold_ids(barrel, limit: 0, limit: 1) == []
    end

    test "keeps its first value in create_barrel params" do
      name = unique_name()
      :ok = Barrel.create_barrel(name, revs_limit: 3, revs_limit: 4)
      assert {:ok, %{revs_limit: 3}} = Barrel.barrel_infos(name)
    end
  end
end
