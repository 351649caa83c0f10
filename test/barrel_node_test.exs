defmodule Barrel.NodeTest do
  # The node's store as a whole: the list of barrels, and what survives a
  # restart of the application. Not async: these tests see every barrel and
  # stop the application.
  use ExUnit.Case, async: false
  import Barrel.Case, only: [unique_name: 0]

  test "list_barrels/0 lists exactly the barrels of the node, sorted" do
    before = Barrel.list_barrels()
    [first, second] = names = [unique_name(), unique_name()]
    :ok = Barrel.create_barrel(second)
    :ok = Barrel.create_barrel(first)

    assert Barrel.list_barrels() == Enum.sort(before ++ names)

    :ok = Barrel.delete_barrel(first)
    assert Barrel.list_barrels() == Enum.sort(before ++ [second])
  end

  @tag :capture_log
  test "barrels and documents survive a restart of the application; handles do not" do
    name = unique_name()
    :ok = Barrel.create_barrel(name, revs_limit: 5)
    {:ok, barrel} = Barrel.open(name)
    {:ok, "a", rev_a} = Barrel.save_doc(barrel, %{"id" => "a", "v" => nil, "l" => [1.5, "x"]})
    {:ok, "b", rev_b} = Barrel.save_doc(barrel, %{"id" => "b"})
    {:ok, "b", tombstone} = Barrel.delete_doc(barrel, "b", rev_b)
    {:ok, infos} = Barrel.barrel_infos(name)

    assert Application.stop(:barrel) == :ok
    assert Barrel.fetch_doc(barrel, "a") == {:error, :closed}
    assert Barrel.list_barrels() == {:error, :closed}
    assert Barrel.open(name) == {:error, :closed}

    assert {:ok, _} = Application.ensure_all_started(:barrel)
    assert Barrel.fetch_doc(barrel, "a") == {:error, :closed}
    assert name in Barrel.list_barrels()

    {:ok, reopened} = Barrel.open(name)

    assert Barrel.fetch_doc(reopened, "a") ==
             {:ok, %{"id" => "a", "_rev" => rev_a, "v" => nil, "l" => [1.5, "x"]}}

    assert Barrel.fetch_doc(reopened, "b") == {:error, :not_found}

    assert Barrel.fetch_doc(reopened, "b", rev: tombstone) ==
             {:ok, %{"id" => "b", "_rev" => tombstone, "_deleted" => true}}

    assert {:ok, restarted} = Barrel.barrel_infos(name)
    assert Map.delete(restarted, :disk_size) == Map.delete(infos, :disk_size)
    assert %{revs_limit: 5, docs_count: 1, deleted_count: 1, updated_seq: 3} = restarted
  end
end
