defmodule Barrel.AttachmentsTest do
  # Attachments from Elixir: inline and standalone, streamed in from
  # enumerables and files and out as streams, stubs across updates, links,
  # and refused writes that leave the document as it was.
  use Barrel.Case, async: true

  defp digest(data), do: "md5-" <> Base.encode64(:crypto.hash(:md5, data))

  defp with_hello(barrel) do
    atts = %{"a.txt" => %{"content_type" => "text/plain", "data" => "hello"}}
    save!(barrel, %{"id" => "a", "_attachments" => atts})
  end

  defp tmp_path do
    Path.join(System.tmp_dir!(), "barrel-att-#{System.unique_integer([:positive])}")
  end

  describe "inline attachments" do
    test "are stored as stubs and read back", %{barrel: barrel} do
      rev = with_hello(barrel)

      assert Barrel.fetch_doc(barrel, "a") ==
               {:ok,
                %{
                  "id" => "a",
                  "_rev" => rev,
                  "_attachments" => %{
                    "a.txt" => %{
                      "content_type" => "text/plain",
                      "digest" => digest("hello"),
                      "length" => 5,
                      "revpos" => 1,
                      "stub" => true
                    }
                  }
                }}

      assert Barrel.fetch_attachment(barrel, "a", "a.txt") == {:ok, "hello"}
    end

    test "come with their data with attachments: true", %{barrel: barrel} do
      rev = with_hello(barrel)

      assert {:ok, %{"_rev" => ^rev, "_attachments" => %{"a.txt" => att}}} =
               Barrel.fetch_doc(barrel, "a", attachments: true)

      assert att == %{
               "content_type" => "text/plain",
               "digest" => digest("hello"),
               "length" => 5,
               "revpos" => 1,
               "data" => "hello"
             }
    end

    test "survive an update that sends the stub back", %{barrel: barrel} do
      with_hello(barrel)
      {:ok, doc} = Barrel.fetch_doc(barrel, "a")
      rev2 = save!(barrel, Map.put(doc, "v", 2))
      assert {:ok, %{"_rev" => ^rev2, "v" => 2}} = Barrel.fetch_doc(barrel, "a")
      assert Barrel.fetch_attachment(barrel, "a", "a.txt") == {:ok, "hello"}
    end

    test "are saved by save_docs/3 too", %{barrel: barrel} do
      docs = [
        %{"id" => "x", "_attachments" => %{"x" => %{"data" => <<1, 2, 3>>}}},
        %{"id" => "y", "_attachments" => %{"y" => %{"data" => :not_binary}}}
      ]

      assert {:ok, [{:ok, "x", _}, {:error, {:bad_attachment, "y: data must be a binary"}}]} =
               Barrel.save_docs(barrel, docs)

      assert Barrel.fetch_attachment(barrel, "x", "x") == {:ok, <<1, 2, 3>>}
    end

    test "can be links", %{barrel: barrel} do
      url = "https://example.com/logo.png"
      save!(barrel, %{"id" => "l", "_attachments" => %{"logo" => %{"url" => url}}})
      assert Barrel.fetch_attachment(barrel, "l", "logo") == {:ok, {:url, url}}

      assert Barrel.attachment_info(barrel, "l", "logo") ==
               {:ok, %{content_type: "application/octet-stream", url: url, revpos: 1}}

      assert Barrel.attachment_stream(barrel, "l", "logo") == {:error, :not_found}
    end
  end

  describe "put_attachment/6" do
    test "creates a document with rev nil", %{barrel: barrel} do
      assert {:ok, "p", "1-" <> _} = Barrel.put_attachment(barrel, "p", nil, "p.txt", "data")
      assert Barrel.fetch_attachment(barrel, "p", "p.txt") == {:ok, "data"}
      assert Barrel.put_attachment(barrel, "p", nil, "q.txt", "x") == {:error, :conflict}
    end

    test "replaces an attachment and moves its revpos", %{barrel: barrel} do
      rev1 = with_hello(barrel)

      assert {:ok, "a", _rev2} =
               Barrel.put_attachment(barrel, "a", rev1, "a.txt", "bonjour", content_type: "text/x")

      assert Barrel.fetch_attachment(barrel, "a", "a.txt") == {:ok, "bonjour"}

      assert Barrel.attachment_info(barrel, "a", "a.txt") ==
               {:ok, %{content_type: "text/x", digest: digest("bonjour"), length: 7, revpos: 2}}

      assert Barrel.fetch_attachment(barrel, "a", "a.txt", rev: rev1) == {:error, :not_found}
    end

    test "streams a file with File.stream!", %{barrel: barrel} do
      content = :crypto.strong_rand_bytes(500_000)
      path = tmp_path()
      File.write!(path, content)

      try do
        assert {:ok, "f", _} =
                 Barrel.put_attachment(
                   barrel,
                   "f",
                   nil,
                   "f.bin",
                   {:stream, File.stream!(path, [], 65_536)},
                   digest: digest(content),
                   length: byte_size(content)
                 )

        assert {:ok, "g", _} = Barrel.put_attachment(barrel, "g", nil, "g.bin", {:file, path})
      after
        File.rm!(path)
      end

      assert Barrel.fetch_attachment(barrel, "f", "f.bin") == {:ok, content}
      assert Barrel.fetch_attachment(barrel, "g", "g.bin") == {:ok, content}
    end

    test "takes a function giving chunks", %{barrel: barrel} do
      {:ok, agent} = Agent.start_link(fn -> ["ab", ["c", ?d]] end)

      next = fn ->
        Agent.get_and_update(agent, fn
          [chunk | rest] -> {{:ok, chunk}, rest}
          [] -> {:eof, []}
        end)
      end

      assert {:ok, "s", _} = Barrel.put_attachment(barrel, "s", nil, "s", {:stream, next})
      assert Barrel.fetch_attachment(barrel, "s", "s") == {:ok, "abcd"}
    end

    test "refuses bad content and leaves the document as it was", %{barrel: barrel} do
      rev1 = with_hello(barrel)
      {:ok, before} = Barrel.fetch_doc(barrel, "a")
      put = &Barrel.put_attachment(barrel, "a", rev1, &1, &2, &3)

      assert {:error, {:bad_attachment, "a.txt: digest " <> _}} =
               put.("a.txt", "bye", digest: digest("other"))

      assert put.("a.txt", "bye", length: 4) ==
               {:error, {:bad_attachment, "a.txt: length 4 announced, 3 bytes given"}}

      assert put.("a.txt", "12345", max_size: 4) == {:error, {:attachment_too_large, 4}}

      assert put.("_a.txt", "bye", []) ==
               {:error, {:bad_attachment, "_a.txt: invalid attachment name"}}

      assert put.("a.txt", 42, []) == {:error, {:bad_arg, :content}}
      assert put.("a.txt", {:stream, 42}, []) == {:error, {:bad_arg, :content}}
      assert put.("a.txt", {:stream, [:not_iodata]}, []) == {:error, {:bad_arg, :chunk}}
      assert put.("a.txt", "bye", colour: :red) == {:error, {:bad_option, {:colour, :red}}}
      assert put.("a.txt", "bye", [:nope]) == {:error, {:bad_option, [:nope]}}

      failing = Stream.concat(["partial"], Stream.map([1], fn _ -> raise "source failed" end))
      assert_raise RuntimeError, "source failed", fn -> put.("a.txt", {:stream, failing}, []) end

      assert Barrel.fetch_doc(barrel, "a") == {:ok, before}
      assert Barrel.fetch_attachment(barrel, "a", "a.txt") == {:ok, "hello"}
    end
  end

  describe "delete_attachment/4 and delete_doc/3" do
    test "remove the attachment from the new revision", %{barrel: barrel} do
      rev1 = with_hello(barrel)
      assert {:ok, "a", rev2} = Barrel.delete_attachment(barrel, "a", rev1, "a.txt")
      assert Barrel.fetch_doc(barrel, "a") == {:ok, %{"id" => "a", "_rev" => rev2}}
      assert Barrel.fetch_attachment(barrel, "a", "a.txt") == {:error, :not_found}
      assert Barrel.delete_attachment(barrel, "a", rev1, "a.txt") == {:error, :conflict}
      assert {:ok, "a", _} = Barrel.delete_doc(barrel, "a", rev2)
      assert Barrel.fetch_attachment(barrel, "a", "a.txt") == {:error, :not_found}
    end

    test "leave a content shared with another document readable", %{barrel: barrel} do
      content = :crypto.strong_rand_bytes(200_000)
      {:ok, "x", rev_x} = Barrel.put_attachment(barrel, "x", nil, "f", content)
      {:ok, "y", _} = Barrel.put_attachment(barrel, "y", nil, "f", content)
      assert {:ok, "x", _} = Barrel.delete_doc(barrel, "x", rev_x)
      assert Barrel.fetch_attachment(barrel, "y", "f") == {:ok, content}
    end
  end

  describe "streamed reads" do
    setup %{barrel: barrel} do
      content = :crypto.strong_rand_bytes(300_000)
      {:ok, "r", _} = Barrel.put_attachment(barrel, "r", nil, "r.bin", content)
      %{content: content}
    end

    test "attachment_stream/4 reads chunks and ranges", %{barrel: barrel, content: content} do
      assert {:ok, stream, %{length: 300_000}} =
               Barrel.attachment_stream(barrel, "r", "r.bin", range: {131_000, 131_100})

      assert Barrel.read_attachment(stream) == {:ok, binary_part(content, 131_000, 72)}
      assert Barrel.read_attachment(stream) == {:ok, binary_part(content, 131_072, 28)}
      assert Barrel.read_attachment(stream) == :eof

      assert Barrel.attachment_stream(barrel, "r", "r.bin", range: {2, 1}) ==
               {:error, {:bad_option, {:range, {2, 1}}}}
    end

    test "attachment_chunks/4 is a lazy stream", %{barrel: barrel, content: content} do
      chunks = Barrel.attachment_chunks(barrel, "r", "r.bin")
      assert Enum.map(chunks, &byte_size/1) == [131_072, 131_072, 37_856]
      assert IO.iodata_to_binary(Enum.to_list(chunks)) == content
      assert chunks |> Enum.take(1) |> IO.iodata_to_binary() == binary_part(content, 0, 131_072)

      ranged = Barrel.attachment_chunks(barrel, "r", "r.bin", range: {10, 20})
      assert Enum.to_list(ranged) == [binary_part(content, 10, 10)]

      assert_raise ErlangError, ~r/:not_found/, fn ->
        barrel |> Barrel.attachment_chunks("r", "nope") |> Enum.to_list()
      end
    end

    test "fold_attachment/6 folds over the chunks", %{barrel: barrel, content: content} do
      md5 = fn chunk, ctx -> {:ok, :crypto.hash_update(ctx, chunk)} end

      assert {:ok, ctx} =
               Barrel.fold_attachment(barrel, "r", "r.bin", md5, :crypto.hash_init(:md5))

      assert :crypto.hash_final(ctx) == :crypto.hash(:md5, content)

      assert Barrel.fold_attachment(barrel, "r", "r.bin", fn _, n -> {:stop, n + 1} end, 0) ==
               {:ok, 1}
    end
  end
end
