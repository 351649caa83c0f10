defmodule BarrelTest do
  # Barrels: create, open, close, delete, infos. Documents, conflicts, folds,
  # options and the node's life each have a file of their own.
  use Barrel.Case, async: true

  doctest Barrel

  describe "create_barrel/2" do
    test "creates a barrel that can be opened" do
      name = unique_name()
      assert Barrel.create_barrel(name) == :ok
      assert {:ok, barrel} = Barrel.open(name)
      assert is_reference(barrel)
    end

    test "refuses a name in use", %{name: name} do
      assert Barrel.create_barrel(name) == {:error, :already_exists}
    end

    test "takes params as a map or a keyword list" do
      map_name = unique_name()
      list_name = unique_name()
      assert Barrel.create_barrel(map_name, %{revs_limit: 7, sync: true}) == :ok
      assert Barrel.create_barrel(list_name, revs_limit: 7, sync: true) == :ok
      assert {:ok, %{revs_limit: 7, sync: true}} = Barrel.barrel_infos(map_name)
      assert {:ok, %{revs_limit: 7, sync: true}} = Barrel.barrel_infos(list_name)
    end

    test "defaults to 1000 revisions per branch and no fsync", %{name: name} do
      assert {:ok, %{revs_limit: 1000, sync: false}} = Barrel.barrel_infos(name)
    end

    test "ignores unknown params" do
      name = unique_name()
      assert Barrel.create_barrel(name, store_provider: :rocksdb) == :ok
      assert {:ok, %{revs_limit: 1000}} = Barrel.barrel_infos(name)
    end

    test "refuses ill-typed params" do
      assert Barrel.create_barrel(unique_name(), revs_limit: 0) ==
               {:error, {:bad_param, "revs_limit must be 1..1000000, got 0"}}

      assert Barrel.create_barrel(unique_name(), revs_limit: 1_000_001) ==
               {:error, {:bad_param, "revs_limit must be 1..1000000, got 1000001"}}

      assert Barrel.create_barrel(unique_name(), revs_limit: "10") ==
               {:error, {:bad_param, "revs_limit must be a positive integer"}}

      assert Barrel.create_barrel(unique_name(), sync: 1) ==
               {:error, {:bad_param, "sync must be a boolean"}}
    end

    test "refuses params that are neither a map nor a keyword list" do
      name = unique_name()
      assert Barrel.create_barrel(name, [:sync]) == {:error, {:bad_param, [:sync]}}
      assert Barrel.create_barrel(name, :sync) == {:error, {:bad_param, :sync}}
      assert Barrel.open(name) == {:error, :not_found}
    end

    test "accepts names of 1 to 128 ASCII letters, digits, _, - and ." do
      for name <- ["a", "9", "A_b-c.d", String.duplicate("n", 128)] do
        assert Barrel.create_barrel(name) == :ok, "#{name} refused"
      end
    end

    test "refuses invalid names" do
      for name <- ["", "_a", "-a", ".a", "a b", "a/b", "é", String.duplicate("a", 129)] do
        assert Barrel.create_barrel(name) == {:error, {:invalid_name, name}}
      end

      assert Barrel.create_barrel(~c"abc") == {:error, {:invalid_name, ~c"abc"}}
      assert Barrel.create_barrel(:abc) == {:error, {:invalid_name, :abc}}
    end
  end

  describe "open/1" do
    test "returns not_found for a barrel that does not exist" do
      assert Barrel.open(unique_name()) == {:error, :not_found}
    end

    test "refuses a name no barrel can have" do
      assert Barrel.open("_a") == {:error, {:invalid_name, "_a"}}
    end

    test "refuses a name that is not a binary" do
      assert Barrel.open(:abc) == {:error, {:invalid_name, :abc}}
    end

    test "gives independent handles on the same barrel", %{name: name, barrel: barrel} do
      {:ok, other} = Barrel.open(name)
      {:ok, "a", rev} = Barrel.save_doc(barrel, %{"id" => "a"})
      assert Barrel.fetch_doc(other, "a") == {:ok, %{"id" => "a", "_rev" => rev}}
    end
  end

  describe "close/1" do
    test "makes every later call on the handle return closed", %{barrel: barrel} do
      rev = save!(barrel, %{"id" => "a"})
      assert Barrel.close(barrel) == :ok

      assert Barrel.save_doc(barrel, %{"id" => "b"}) == {:error, :closed}
      assert Barrel.save_docs(barrel, [%{"id" => "b"}]) == {:error, :closed}
      assert Barrel.fetch_doc(barrel, "a") == {:error, :closed}
      assert Barrel.fetch_doc(barrel, "a", open_revs: :all) == {:error, :closed}
      assert Barrel.delete_doc(barrel, "a", rev) == {:error, :closed}
      assert Barrel.fold_docs(barrel, fn _, acc -> {:ok, acc} end, 0) == {:error, :closed}
      assert Barrel.barrel_infos(barrel) == {:error, :closed}
    end

    test "is idempotent", %{barrel: barrel} do
      assert Barrel.close(barrel) == :ok
      assert Barrel.close(barrel) == :ok
    end

    test "leaves other handles on the barrel open", %{name: name, barrel: barrel} do
      {:ok, other} = Barrel.open(name)
      rev = save!(barrel, %{"id" => "a"})
      assert Barrel.close(other) == :ok
      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev}}
    end

    test "refuses what is not a handle" do
      assert Barrel.close(:barrel) == {:error, {:bad_arg, :barrel}}
      assert Barrel.close(make_ref()) == {:error, {:bad_arg, :barrel}}
    end
  end

  describe "delete_barrel/1" do
    test "removes the barrel from the node", %{name: name} do
      assert Barrel.delete_barrel(name) == :ok
      assert Barrel.open(name) == {:error, :not_found}
      assert Barrel.barrel_infos(name) == {:error, :not_found}
      refute name in Barrel.list_barrels()
    end

    test "makes open handles return not_found", %{name: name, barrel: barrel} do
      rev = save!(barrel, %{"id" => "a"})
      assert Barrel.delete_barrel(name) == :ok

      assert Barrel.save_doc(barrel, %{"id" => "b"}) == {:error, :not_found}
      assert Barrel.save_docs(barrel, [%{"id" => "b"}]) == {:error, :not_found}
      assert Barrel.fetch_doc(barrel, "a") == {:error, :not_found}
      assert Barrel.delete_doc(barrel, "a", rev) == {:error, :not_found}
      assert Barrel.fold_docs(barrel, fn _, acc -> {:ok, acc} end, 0) == {:error, :not_found}
      assert Barrel.barrel_infos(barrel) == {:error, :not_found}
      assert Barrel.close(barrel) == :ok
    end

    test "frees the name for a new, empty barrel", %{name: name, barrel: old} do
      save!(old, %{"id" => "a"})
      :ok = Barrel.delete_barrel(name)

      assert Barrel.create_barrel(name) == :ok
      {:ok, barrel} = Barrel.open(name)
      assert Barrel.fetch_doc(barrel, "a") == {:error, :not_found}
      assert {:ok, %{docs_count: 0, updated_seq: 0}} = Barrel.barrel_infos(name)
      assert Barrel.fetch_doc(old, "a") == {:error, :not_found}
    end

    test "returns not_found for a barrel that does not exist" do
      assert Barrel.delete_barrel(unique_name()) == {:error, :not_found}
      assert Barrel.delete_barrel("_a") == {:error, {:invalid_name, "_a"}}
    end

    test "refuses a name that is not a binary" do
      assert Barrel.delete_barrel(:abc) == {:error, {:invalid_name, :abc}}
    end
  end

  describe "list_barrels/0" do
    test "lists created barrels and forgets deleted ones", %{name: name} do
      other = unique_name()
      :ok = Barrel.create_barrel(other)
      names = Barrel.list_barrels()
      assert name in names
      assert other in names
      assert names == Enum.sort(names)

      :ok = Barrel.delete_barrel(other)
      refute other in Barrel.list_barrels()
    end
  end

  describe "barrel_infos/1" do
    test "describes a new barrel by name and by handle", %{name: name, barrel: barrel} do
      infos = %{
        name: name,
        docs_count: 0,
        deleted_count: 0,
        updated_seq: 0,
        data_size: 0,
        disk_size: 0,
        revs_limit: 1000,
        sync: false
      }

      assert Barrel.barrel_infos(name) == {:ok, infos}
      assert Barrel.barrel_infos(barrel) == {:ok, infos}
    end

    test "counts live and deleted documents and changes", %{barrel: barrel} do
      rev_a = save!(barrel, %{"id" => "a", "v" => 1})
      save!(barrel, %{"id" => "a", "_rev" => rev_a, "v" => 2})
      rev_b = save!(barrel, %{"id" => "b"})
      {:ok, "b", _} = Barrel.delete_doc(barrel, "b", rev_b)
      save!(barrel, %{"id" => "c"})

      assert {:ok, infos} = Barrel.barrel_infos(barrel)
      assert %{docs_count: 2, deleted_count: 1, updated_seq: 5} = infos
      assert infos.data_size > 0
      assert is_integer(infos.disk_size) and infos.disk_size >= 0
    end

    test "returns not_found for a barrel that does not exist" do
      assert Barrel.barrel_infos(unique_name()) == {:error, :not_found}
    end

    test "refuses what is neither a name nor a handle" do
      assert Barrel.barrel_infos(:abc) == {:error, {:invalid_name, :abc}}
      assert Barrel.barrel_infos("_a") == {:error, {:invalid_name, "_a"}}
      assert Barrel.barrel_infos(make_ref()) == {:error, {:bad_arg, :barrel}}
    end
  end
end
