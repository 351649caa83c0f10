defmodule Barrel.HTTPTest do
  # The HTTP API through the Elixir functions: start_http/1, http_info/1,
  # stop_http/1 and their options, with :httpc as the client. The Erlang
  # suite (test/barrel_http_tests.erl) covers auth, TLS, changes and the
  # application stopping; the Rust tests cover the routes one by one.
  use Barrel.Case, async: true

  setup_all do
    {:ok, started} = Application.ensure_all_started(:inets)
    # Stopping logs a notice per application, which is not news here.
    on_exit(fn ->
      ExUnit.CaptureLog.capture_log(fn ->
        Enum.each(Enum.reverse(started), &Application.stop/1)
      end)
    end)
  end

  # {status, headers, body} of a request; a body is sent as JSON.
  defp request(method, url, headers \\ [], body \\ nil) do
    request =
      case body do
        nil -> {String.to_charlist(url), headers}
        _ -> {String.to_charlist(url), headers, ~c"application/json", body}
      end

    {:ok, {{_, status, _}, resp_headers, resp_body}} =
      :httpc.request(method, request, [timeout: 15_000], body_format: :binary)

    {status, resp_headers, resp_body}
  end

  defp start!(opts) do
    {:ok, http} = Barrel.start_http(Keyword.put(opts, :port, 0))
    {:ok, %{url: url}} = Barrel.http_info(http)
    on_exit(fn -> Barrel.stop_http(http) end)
    {http, url}
  end

  defp refused?(port) do
    :gen_tcp.connect({127, 0, 0, 1}, port, [], 2000) == {:error, :econnrefused}
  end

  describe "start_http/1, http_info/1, stop_http/1" do
    test "a server on a free port serves until it is stopped" do
      assert {:ok, http} = Barrel.start_http(port: 0)
      assert is_pid(http)
      assert {:ok, %{ip: {127, 0, 0, 1}, port: port, url: url} = info} = Barrel.http_info(http)
      assert map_size(info) == 3
      assert port > 0
      assert url == "http://127.0.0.1:#{port}"

      assert {200, headers, body} = request(:get, url <> "/")
      assert {~c"content-type", ~c"application/json"} in headers
      assert body =~ ~s("barrel":"Welcome")

      assert Barrel.stop_http(http) == :ok
      assert refused?(port)
      assert Barrel.stop_http(http) == {:error, :not_found}
      assert Barrel.http_info(http) == {:error, :not_found}
      assert Barrel.stop_http(self()) == {:error, :not_found}
    end

    test "two servers at once, each on its own port" do
      {first, first_url} = start!([])
      {_second, second_url} = start!([])
      assert first_url != second_url
      assert {200, _, "[" <> _} = request(:get, first_url <> "/barrels")
      assert {200, _, "[" <> _} = request(:get, second_url <> "/barrels")

      assert Barrel.stop_http(first) == :ok
      assert {200, _, _} = request(:get, second_url <> "/barrels")
    end

    test "a server is not tied to the process that started it" do
      started = Task.async(fn -> Barrel.start_http(port: 0) end) |> Task.await()
      assert {:ok, http} = started
      {:ok, %{url: url}} = Barrel.http_info(http)
      assert {200, _, _} = request(:get, url <> "/")
      assert Barrel.stop_http(http) == :ok
    end
  end

  describe "documents over HTTP" do
    test "what Barrel writes HTTP serves, and the other way round", %{name: name, barrel: barrel} do
      {_http, url} = start!([])
      docs = "#{url}/barrels/#{name}/docs"

      rev = save!(barrel, %{"id" => "a"})
      assert {200, _, body} = request(:get, docs <> "/a")
      assert body == ~s({"_rev":"#{rev}","id":"a"})

      assert {200, _, body} = request(:get, "#{url}/barrels/#{name}/a")
      assert body == ~s({"_id":"a","_rev":"#{rev}"})

      assert {201, _, body} = request(:put, docs <> "/b", [], ~s({"tags": ["x", null]}))
      assert {:ok, %{"_rev" => rev_b} = doc} = Barrel.fetch_doc(barrel, "b")
      assert doc == %{"id" => "b", "_rev" => rev_b, "tags" => ["x", nil]}
      assert body == ~s({"id":"b","ok":true,"rev":"#{rev_b}"})

      assert {:ok, changes, 2} = Barrel.changes(barrel, 0)
      assert Enum.map(changes, & &1["id"]) == ["a", "b"]
    end
  end

  describe "options" do
    test "tokens: a request needs Authorization: Bearer", %{name: name} do
      {_http, url} = start!(tokens: ["s3cret"])
      info = "#{url}/barrels/#{name}"

      assert {401, _, body} = request(:get, info)
      assert body =~ ~s("error":"unauthorized")
      assert {200, _, _} = request(:get, info, [{~c"authorization", ~c"Bearer s3cret"}])
      assert {401, _, _} = request(:get, info, [{~c"authorization", ~c"Bearer other"}])
    end

    test "max_body and cors are passed on" do
      {_http, url} = start!(max_body: 16, cors: ["http://app.example"])
      name = unique_name()

      assert {413, _, _} = request(:put, "#{url}/barrels/#{name}", [], ~s({"name": "#{name}"}))
      assert Barrel.barrel_infos(name) == {:error, :not_found}

      assert {200, headers, _} = request(:get, url <> "/", [{~c"origin", ~c"http://app.example"}])
      assert {~c"access-control-allow-origin", ~c"http://app.example"} in headers
    end

    test "refuses unknown and ill-typed options" do
      for {key, value} <- [
            bogus: 1,
            ip: "127.0.0.1",
            ip: {127, 0, 0},
            port: -1,
            port: 65_536,
            basic_auth: [{~c"user", ~c"pass"}],
            basic_auth: ["user:pass"],
            tokens: "s3cret",
            tokens: [:s3cret],
            tls: "cert.pem",
            cors: :all,
            max_body: 0
          ] do
        assert Barrel.start_http([{key, value}]) == {:error, {:bad_option, {key, value}}}
      end

      for opts <- [%{port: 0}, [:port], :port] do
        assert Barrel.start_http(opts) == {:error, {:bad_option, opts}}
      end
    end

    test "refuses a non-loopback address without credentials, and unreadable TLS files" do
      assert {:error, {:bad_param, why}} = Barrel.start_http(ip: {0, 0, 0, 0}, port: 0)
      assert why =~ "requires authentication"

      missing = Path.join(System.tmp_dir!(), "barrel-missing-#{System.unique_integer()}.pem")

      assert {:error, {:bad_param, why}} = Barrel.start_http(port: 0, tls: {missing, missing})

      assert why =~ missing
    end
  end
end
