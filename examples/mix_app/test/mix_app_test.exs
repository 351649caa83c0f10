defmodule MixAppTest do
  use ExUnit.Case
  import ExUnit.CaptureIO

  test "run/0 saves a document, fetches it back and prints it" do
    output = capture_io(fn -> send(self(), {:result, MixApp.run()}) end)
    assert_received {:result, {:ok, doc}}

    assert %{"id" => id, "_rev" => "1-" <> _, "greeting" => "hello", "reply" => nil} = doc
    assert output == "saved and fetched #{inspect(doc)}\n"

    {:ok, barrel} = Barrel.open("mix_app")
    assert Barrel.fetch_doc(barrel, id) == {:ok, doc}
  end
end
