%% @doc The HTTP API as an Erlang user meets it: start_http/1, http_info/1 and
%% stop_http/1, their options, and documents and changes crossing between the
%% `barrel' functions and HTTP, with httpc (inets) as the client. The routes
%% one by one are tested in native/barrel_core/tests/http.rs.
-module(barrel_http_tests).
-include_lib("eunit/include/eunit.hrl").

http_test_() ->
    {setup, fun setup/0, fun cleanup/1,
     fun(_) ->
             [{"start on port 0; http_info tells the address", fun start_and_info/0},
              {"barrels created on either side are seen on the other", fun barrels_both_ways/0},
              {"a doc saved with save_doc is served as fetch_doc returns it",
               fun save_doc_then_get/0},
              {"a doc PUT over HTTP is read by fetch_doc", fun put_then_fetch_doc/0},
              {"revisions are shared: stale revs conflict on both sides", fun shared_revisions/0},
              {"the CouchDB surface shows _id", fun couch_surface/0},
              {"_changes is the barrel's feed", fun changes_normal/0},
              {"a waiting longpoll wakes up on barrel:save_doc", fun longpoll_wakes_up/0},
              {"a longpoll without changes answers at its timeout", fun longpoll_timeout/0},
              {"stop_http closes the port; a second stop is not_found", fun stop/0},
              {"stop_http ends requests still waiting", fun stop_ends_open_requests/0},
              {"two servers at once, over the same barrels", fun two_servers/0},
              {"a server outlives the process that started it", fun outlives_its_starter/0},
              {"bad options are refused, nothing is started", fun bad_options/0},
              {"a non-loopback address without credentials is refused",
               fun non_loopback_needs_credentials/0},
              {"a non-loopback address with a token: Bearer or 401", fun bearer_token/0},
              {"basic auth", fun basic_auth/0},
              {"max_body: bigger requests get 413", fun max_body/0},
              {"attachments: put and get over HTTP, max_attachment_size 413",
               fun attachments/0},
              {"cors: allowed origins only", fun cors/0},
              {timeout, 60, {"tls: https with a self-signed certificate", fun tls/0}},
              {"tls: unreadable files are a bad_param", fun tls_missing_files/0},
              {"stopping the application stops its servers", fun application_stop/0}]
     end}.

setup() ->
    Dir = barrel_test_setup:start(),
    {ok, Inets} = application:ensure_all_started(inets),
    {ok, Ssl} = application:ensure_all_started(ssl),
    {Dir, Inets ++ Ssl}.

cleanup({Dir, Started}) ->
    [ok = application:stop(App) || App <- lists:reverse(Started)],
    barrel_test_setup:stop(Dir).

%% ---------------------------------------------------------------------------
%% Helpers
%% ---------------------------------------------------------------------------

%% A server on a free port, and its url as a string.
start(Opts) ->
    {ok, Http} = barrel:start_http(Opts#{port => 0}),
    {ok, #{url := Url}} = barrel:http_info(Http),
    {Http, binary_to_list(Url)}.

%% Runs Fun(Url) against a new server, stopped afterwards whatever happens.
with_server(Opts, Fun) ->
    {Http, Url} = start(Opts),
    try Fun(Url)
    after ok = barrel:stop_http(Http)
    end.

%% The port a server listens on.
port(Http) ->
    {ok, #{port := Port}} = barrel:http_info(Http),
    Port.

%% A new barrel: its name as a string (for urls) and a handle.
fresh() ->
    {Name, B} = barrel_test_setup:fresh_barrel(<<"http">>),
    {binary_to_list(Name), B}.

%% `{Status, Headers, Body}' of a request; Body (`none' for no body) is sent
%% as JSON. Certificates are not checked: the tls test's is self-signed.
raw(Method, Url, Headers, Body) ->
    Req = case Body of
              none -> {Url, Headers};
              _ -> {Url, Headers, "application/json", Body}
          end,
    {ok, {{_, Status, _}, RespHeaders, RespBody}} =
        httpc:request(Method, Req, [{timeout, 15000}, {ssl, [{verify, verify_none}]}],
                      [{body_format, binary}]),
    {Status, RespHeaders, RespBody}.

%% `{Status, DecodedJsonBody}' of a request.
request(Method, Url, Headers, Body) ->
    {Status, _, RespBody} = raw(Method, Url, Headers, Body),
    {Status, json(RespBody)}.

http_get(Url) -> request(get, Url, [], none).
http_put(Url, Body) -> request(put, Url, [], Body).

%% Asserts nothing listens on Port any more.
refused(Port) ->
    ?assertEqual({error, econnrefused}, gen_tcp:connect({127, 0, 0, 1}, Port, [], 2000)).

%% What a process sent back as {Tag, Value} within Ms, else `nothing'.
answer(Tag, Ms) ->
    receive {Tag, Value} -> Value
    after Ms -> nothing
    end.

%% Just enough JSON to read the server's answers: objects become maps with
%% binary keys, null is `null'.
json(Bin) ->
    {Value, Rest} = json_value(json_ws(Bin)),
    <<>> = json_ws(Rest),
    Value.

json_value(<<${, R/binary>>) ->
    case json_ws(R) of
        <<$}, R1/binary>> -> {#{}, R1};
        R1 -> json_members(R1, #{})
    end;
json_value(<<$[, R/binary>>) ->
    case json_ws(R) of
        <<$], R1/binary>> -> {[], R1};
        R1 -> json_elements(R1, [])
    end;
json_value(<<$", R/binary>>) -> json_string(R, <<>>);
json_value(<<"true", R/binary>>) -> {true, R};
json_value(<<"false", R/binary>>) -> {false, R};
json_value(<<"null", R/binary>>) -> {null, R};
json_value(R) -> json_number(R, <<>>).

json_members(<<$", R/binary>>, Acc) ->
    {Key, R1} = json_string(R, <<>>),
    <<$:, R2/binary>> = json_ws(R1),
    {Value, R3} = json_value(json_ws(R2)),
    case json_ws(R3) of
        <<$,, R4/binary>> -> json_members(json_ws(R4), Acc#{Key => Value});
        <<$}, R4/binary>> -> {Acc#{Key => Value}, R4}
    end.

json_elements(R, Acc) ->
    {Value, R1} = json_value(R),
    case json_ws(R1) of
        <<$,, R2/binary>> -> json_elements(json_ws(R2), [Value | Acc]);
        <<$], R2/binary>> -> {lists:reverse([Value | Acc]), R2}
    end.

json_string(<<$", R/binary>>, Acc) -> {Acc, R};
json_string(<<$\\, $u, Hex:4/binary, R/binary>>, Acc) ->
    json_string(R, <<Acc/binary, (binary_to_integer(Hex, 16))/utf8>>);
json_string(<<$\\, C, R/binary>>, Acc) ->
    Char = case C of $n -> $\n; $t -> $\t; $r -> $\r; $b -> $\b; $f -> $\f; _ -> C end,
    json_string(R, <<Acc/binary, Char>>);
json_string(<<C, R/binary>>, Acc) -> json_string(R, <<Acc/binary, C>>).

json_number(<<C, R/binary>>, Acc) when C >= $0, C =< $9; C =:= $-; C =:= $+;
                                       C =:= $.; C =:= $e; C =:= $E ->
    json_number(R, <<Acc/binary, C>>);
json_number(R, Acc) ->
    try {binary_to_integer(Acc), R}
    catch error:badarg -> {binary_to_float(Acc), R}
    end.

json_ws(<<C, R/binary>>) when C =:= $\s; C =:= $\n; C =:= $\r; C =:= $\t -> json_ws(R);
json_ws(R) -> R.

%% ---------------------------------------------------------------------------
%% Starting, documents, changes
%% ---------------------------------------------------------------------------

start_and_info() ->
    {ok, Http} = barrel:start_http(#{port => 0}),
    {ok, #{ip := Ip, port := Port, url := Url} = Info} = barrel:http_info(Http),
    ?assertEqual([ip, port, url], lists:sort(maps:keys(Info))),
    ?assertEqual({127, 0, 0, 1}, Ip),
    ?assert(is_integer(Port) andalso Port > 0),
    ?assertEqual(iolist_to_binary(["http://127.0.0.1:", integer_to_list(Port)]), Url),
    ?assertMatch({200, #{<<"barrel">> := <<"Welcome">>, <<"couchdb">> := <<"Welcome">>}},
                 http_get(binary_to_list(Url) ++ "/")),
    ok = barrel:stop_http(Http).

barrels_both_ways() ->
    Mine = "http-created-" ++ integer_to_list(erlang:unique_integer([positive])),
    with_server(#{}, fun(Url) ->
        ?assertEqual({201, #{<<"ok">> => true}}, http_put(Url ++ "/barrels/" ++ Mine, "")),
        ?assertMatch({ok, _}, barrel:open(list_to_binary(Mine))),
        {Name, _} = fresh(),
        {200, Names} = http_get(Url ++ "/barrels"),
        ?assert(lists:member(list_to_binary(Name), Names)),
        ?assertMatch({200, #{<<"db_name">> := _, <<"doc_count">> := 0}},
                     http_get(Url ++ "/barrels/" ++ Name)),
        ?assertEqual({200, #{<<"ok">> => true}},
                     request(delete, Url ++ "/barrels/" ++ Mine, [], none)),
        ?assertEqual({error, not_found}, barrel:open(list_to_binary(Mine)))
    end).

save_doc_then_get() ->
    {Name, B} = fresh(),
    Doc = #{<<"id">> => <<"a">>, <<"n">> => 1, <<"f">> => 1.5, <<"null">> => null,
            <<"tags">> => [<<"x">>, true, false], <<"nested">> => #{<<"k">> => <<"é"/utf8>>}},
    {ok, <<"a">>, _} = barrel:save_doc(B, Doc),
    {ok, Fetched} = barrel:fetch_doc(B, <<"a">>),
    with_server(#{}, fun(Url) ->
        ?assertEqual({200, Fetched}, http_get(Url ++ "/barrels/" ++ Name ++ "/docs/a")),
        ?assertEqual({404, #{<<"error">> => <<"not_found">>, <<"reason">> => <<"missing">>}},
                     http_get(Url ++ "/barrels/" ++ Name ++ "/docs/nope"))
    end).

put_then_fetch_doc() ->
    {Name, B} = fresh(),
    with_server(#{}, fun(Url) ->
        Docs = Url ++ "/barrels/" ++ Name ++ "/docs",
        Body = <<"{\"v\": 1, \"nested\": {\"k\": \"é\"}, \"l\": [null]}"/utf8>>,
        {201, #{<<"ok">> := true, <<"id">> := <<"a">>, <<"rev">> := Rev}} =
            http_put(Docs ++ "/a", Body),
        ?assertEqual({ok, #{<<"id">> => <<"a">>, <<"_rev">> => Rev, <<"v">> => 1,
                            <<"nested">> => #{<<"k">> => <<"é"/utf8>>}, <<"l">> => [null]}},
                     barrel:fetch_doc(B, <<"a">>)),
        %% POST without an id: the id is generated, and fetch_doc finds it.
        {201, #{<<"id">> := Id, <<"rev">> := Rev2}} = request(post, Docs, [], "{\"w\": 2}"),
        ?assertEqual({ok, #{<<"id">> => Id, <<"_rev">> => Rev2, <<"w">> => 2}},
                     barrel:fetch_doc(B, Id)),
        {200, #{<<"ok">> := true, <<"id">> := <<"a">>}} =
            request(delete, Docs ++ "/a?rev=" ++ binary_to_list(Rev), [], none),
        ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"a">>))
    end).

shared_revisions() ->
    {Name, B} = fresh(),
    {ok, <<"a">>, Rev1} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"v">> => 1}),
    with_server(#{}, fun(Url) ->
        DocUrl = Url ++ "/barrels/" ++ Name ++ "/docs/a",
        Update = iolist_to_binary(["{\"_rev\": \"", Rev1, "\", \"v\": 2}"]),
        {201, #{<<"rev">> := Rev2}} = http_put(DocUrl, Update),
        ?assertMatch(<<"2-", _/binary>>, Rev2),
        ?assertEqual({error, conflict},
                     barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev1})),
        {ok, <<"a">>, Rev3} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev2}),
        ?assertMatch({409, #{<<"error">> := <<"conflict">>}}, http_put(DocUrl, Update)),
        ?assertEqual({ok, #{<<"id">> => <<"a">>, <<"_rev">> => Rev3}},
                     barrel:fetch_doc(B, <<"a">>))
    end).

couch_surface() ->
    {Name, B} = fresh(),
    {ok, <<"a">>, Rev} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"v">> => 1}),
    with_server(#{}, fun(Url) ->
        Db = Url ++ "/barrels/" ++ Name,
        ?assertEqual({200, #{<<"_id">> => <<"a">>, <<"_rev">> => Rev, <<"v">> => 1}},
                     http_get(Db ++ "/a")),
        {201, #{<<"id">> := <<"b">>, <<"rev">> := RevB}} = http_put(Db ++ "/b", "{\"_id\": \"b\"}"),
        ?assertEqual({ok, #{<<"id">> => <<"b">>, <<"_rev">> => RevB}},
                     barrel:fetch_doc(B, <<"b">>)),
        ?assertMatch({200, #{<<"total_rows">> := 2,
                             <<"rows">> := [#{<<"id">> := <<"a">>,
                                              <<"doc">> := #{<<"_id">> := <<"a">>}},
                                            #{<<"id">> := <<"b">>}]}},
                     http_get(Db ++ "/_all_docs?include_docs=true"))
    end).

changes_normal() ->
    {Name, B} = fresh(),
    {ok, _, RevA1} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
    {ok, _, RevB} = barrel:save_doc(B, #{<<"id">> => <<"b">>}),
    {ok, _, RevA2} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => RevA1,
                                          <<"v">> => 2}),
    {ok, Feed, 3} = barrel:changes(B, 0, #{}),
    with_server(#{}, fun(Url) ->
        Changes = Url ++ "/barrels/" ++ Name ++ "/_changes",
        ?assertEqual({200, #{<<"results">> => [#{<<"seq">> => 2, <<"id">> => <<"b">>,
                                                 <<"changes">> => [#{<<"rev">> => RevB}]},
                                               #{<<"seq">> => 3, <<"id">> => <<"a">>,
                                                 <<"changes">> => [#{<<"rev">> => RevA2}]}],
                             <<"last_seq">> => 3, <<"pending">> => 0}},
                     http_get(Changes)),
        %% The same changes as barrel:changes/3, in the same order.
        {200, #{<<"results">> := Results}} = http_get(Changes),
        ?assertEqual([{Id, Seq} || #{<<"id">> := Id, <<"seq">> := Seq} <- Feed],
                     [{Id, Seq} || #{<<"id">> := Id, <<"seq">> := Seq} <- Results]),
        ?assertMatch({200, #{<<"results">> := [#{<<"id">> := <<"a">>,
                                                 <<"doc">> := #{<<"_id">> := <<"a">>,
                                                                <<"_rev">> := RevA2,
                                                                <<"v">> := 2}}],
                             <<"last_seq">> := 3}},
                     http_get(Changes ++ "?since=2&include_docs=true")),
        ?assertEqual({200, #{<<"results">> => [], <<"last_seq">> => 3, <<"pending">> => 0}},
                     http_get(Changes ++ "?since=now"))
    end).

longpoll_wakes_up() ->
    {Name, B} = fresh(),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"before">>}),
    with_server(#{}, fun(Url) ->
        Longpoll = Url ++ "/barrels/" ++ Name ++ "/_changes?feed=longpoll&since=1&timeout=30000",
        Self = self(),
        spawn_link(fun() -> Self ! {longpoll, http_get(Longpoll)} end),
        %% Nothing after seq 1 yet: the request waits.
        ?assertEqual(nothing, answer(longpoll, 300)),
        {ok, <<"a">>, Rev} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
        ?assertEqual({200, #{<<"results">> => [#{<<"seq">> => 2, <<"id">> => <<"a">>,
                                                 <<"changes">> => [#{<<"rev">> => Rev}]}],
                             <<"last_seq">> => 2, <<"pending">> => 0}},
                     answer(longpoll, 10000))
    end).

longpoll_timeout() ->
    {Name, B} = fresh(),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
    with_server(#{}, fun(Url) ->
        Longpoll = Url ++ "/barrels/" ++ Name ++ "/_changes?feed=longpoll",
        ?assertMatch({200, #{<<"results">> := [#{<<"id">> := <<"a">>}]}}, http_get(Longpoll)),
        ?assertEqual({200, #{<<"results">> => [], <<"last_seq">> => 1, <<"pending">> => 0}},
                     http_get(Longpoll ++ "&since=1&timeout=100"))
    end).

%% ---------------------------------------------------------------------------
%% Stopping, several servers
%% ---------------------------------------------------------------------------

stop() ->
    {Http, Url} = start(#{}),
    Port = port(Http),
    ?assertMatch({200, _}, http_get(Url ++ "/")),
    ?assertEqual(ok, barrel:stop_http(Http)),
    refused(Port),
    ?assertEqual({error, not_found}, barrel:stop_http(Http)),
    ?assertEqual({error, not_found}, barrel:http_info(Http)),
    ?assertEqual({error, not_found}, barrel:stop_http(self())),
    ?assertEqual({error, not_found}, barrel:stop_http(not_a_pid)).

stop_ends_open_requests() ->
    {Name, _} = fresh(),
    {Http, Url} = start(#{}),
    Longpoll = Url ++ "/barrels/" ++ Name ++ "/_changes?feed=longpoll&timeout=30000",
    Self = self(),
    spawn_link(fun() ->
                       Self ! {longpoll, httpc:request(get, {Longpoll, []}, [{timeout, 30000}], [])}
               end),
    ?assertEqual(nothing, answer(longpoll, 300)),
    ok = barrel:stop_http(Http),
    ?assertMatch({error, _}, answer(longpoll, 5000)).

two_servers() ->
    {Name, _} = fresh(),
    {Http1, Url1} = start(#{}),
    {Http2, Url2} = start(#{}),
    ?assertNotEqual(port(Http1), port(Http2)),
    {201, #{<<"rev">> := Rev}} = http_put(Url1 ++ "/barrels/" ++ Name ++ "/docs/a", "{}"),
    ?assertEqual({200, #{<<"id">> => <<"a">>, <<"_rev">> => Rev}},
                 http_get(Url2 ++ "/barrels/" ++ Name ++ "/docs/a")),
    Port1 = port(Http1),
    ok = barrel:stop_http(Http1),
    refused(Port1),
    ?assertMatch({200, #{<<"id">> := <<"a">>}}, http_get(Url2 ++ "/barrels/" ++ Name ++ "/docs/a")),
    ok = barrel:stop_http(Http2).

outlives_its_starter() ->
    {Starter, Ref} = spawn_monitor(fun() -> exit({started, barrel:start_http(#{port => 0})}) end),
    Http = receive {'DOWN', Ref, process, Starter, {started, {ok, Pid}}} -> Pid end,
    {ok, #{url := Url}} = barrel:http_info(Http),
    ?assertMatch({200, _}, http_get(binary_to_list(Url) ++ "/")),
    ok = barrel:stop_http(Http).

%% ---------------------------------------------------------------------------
%% Options
%% ---------------------------------------------------------------------------

bad_options() ->
    Bad = [{bogus, 1}, {ip, "127.0.0.1"}, {ip, {127, 0, 0}}, {ip, {256, 0, 0, 1}},
           {ip, localhost}, {port, -1}, {port, 65536}, {port, <<"80">>},
           {basic_auth, [{"user", "pass"}]}, {basic_auth, {<<"user">>, <<"pass">>}},
           {basic_auth, [<<"user:pass">>]}, {tokens, <<"t">>}, {tokens, ["t"]},
           {tls, "cert.pem"}, {tls, {cert, key}}, {tls, true}, {cors, all},
           {cors, ["http://app.example"]}, {max_body, 0}, {max_body, infinity},
           {max_attachment_size, -1}],
    [?assertEqual({error, {bad_option, {Key, Value}}}, barrel:start_http(#{Key => Value}))
     || {Key, Value} <- Bad],
    ?assertEqual({error, {bad_option, [{port, 0}]}}, barrel:start_http([{port, 0}])),
    ?assertEqual({error, {bad_option, port}}, barrel:start_http(port)),
    ?assertEqual([], supervisor:which_children(barrel_http_sup)).

non_loopback_needs_credentials() ->
    ?assertMatch({error, {bad_param, <<"binding 0.0.0.0 ", _/binary>>}},
                 barrel:start_http(#{ip => {0, 0, 0, 0}, port => 0})),
    ?assertMatch({error, {bad_param, _}},
                 barrel:start_http(#{ip => {0, 0, 0, 0, 0, 0, 0, 0}, port => 0})),
    ?assertMatch({error, {bad_param, _}},
                 barrel:start_http(#{ip => {0, 0, 0, 0}, port => 0, cors => any})),
    ?assertEqual([], supervisor:which_children(barrel_http_sup)).

bearer_token() ->
    {Http, _} = start(#{ip => {0, 0, 0, 0}, tokens => [<<"T">>]}),
    try
        {ok, #{ip := {0, 0, 0, 0}, port := Port}} = barrel:http_info(Http),
        Barrels = "http://127.0.0.1:" ++ integer_to_list(Port) ++ "/barrels",
        ?assertMatch({200, Names} when is_list(Names),
                     request(get, Barrels, [{"authorization", "Bearer T"}], none)),
        {401, Headers, Body} = raw(get, Barrels, [], none),
        ?assertEqual({"content-type", "application/json"},
                     lists:keyfind("content-type", 1, Headers)),
        ?assertEqual(#{<<"error">> => <<"unauthorized">>,
                       <<"reason">> => <<"authentication required (basic or bearer)">>},
                     json(Body)),
        ?assertMatch({401, _}, request(get, Barrels, [{"authorization", "Bearer wrong"}], none)),
        ?assertMatch({401, _}, request(get, Barrels, [{"authorization", "T"}], none))
    after
        ok = barrel:stop_http(Http)
    end.

basic_auth() ->
    Auth = fun(Credentials) ->
                   [{"authorization", "Basic " ++ base64:encode_to_string(Credentials)}]
           end,
    with_server(#{basic_auth => [{<<"admin">>, <<"secret">>}, {<<"ro">>, <<"pw">>}]},
                fun(Url) ->
        Barrels = Url ++ "/barrels",
        ?assertMatch({200, _}, request(get, Barrels, Auth("admin:secret"), none)),
        ?assertMatch({200, _}, request(get, Barrels, Auth("ro:pw"), none)),
        {401, Headers, _} = raw(get, Barrels, [], none),
        ?assertEqual({"www-authenticate", "Basic realm=\"barrel\""},
                     lists:keyfind("www-authenticate", 1, Headers)),
        ?assertMatch({401, #{<<"error">> := <<"unauthorized">>}},
                     request(get, Barrels, Auth("admin:wrong"), none)),
        ?assertMatch({401, _}, request(get, Barrels, Auth("admin:pw"), none)),
        %% A password is not a token.
        ?assertMatch({401, _}, request(get, Barrels, [{"authorization", "Bearer secret"}], none))
    end).

max_body() ->
    {Name, _} = fresh(),
    with_server(#{max_body => 64}, fun(Url) ->
        Docs = Url ++ "/barrels/" ++ Name ++ "/docs",
        ?assertMatch({201, _}, http_put(Docs ++ "/small", "{\"v\": 1}")),
        Big = iolist_to_binary(["{\"v\": \"", lists:duplicate(100, $x), "\"}"]),
        ?assertMatch({413, #{<<"error">> := <<"too_large">>}}, http_put(Docs ++ "/big", Big))
    end).

attachments() ->
    {Name, B} = fresh(),
    with_server(#{max_attachment_size => 1000}, fun(Url) ->
        Att = Url ++ "/barrels/" ++ Name ++ "/docs/d/file.bin",
        Data = crypto:strong_rand_bytes(1000),
        Put = fun(Body) ->
                      {ok, {{_, S, _}, _, R}} =
                          httpc:request(put, {Att, [], "application/x-test", Body},
                                        [{timeout, 15000}], [{body_format, binary}]),
                      {S, json(R)}
              end,
        {201, #{<<"rev">> := Rev}} = Put(Data),
        %% Written over HTTP, read from Erlang, and back.
        ?assertEqual({ok, Data}, barrel:fetch_attachment(B, <<"d">>, <<"file.bin">>)),
        {200, Headers, Data} = raw(get, Att, [], none),
        ?assertEqual("application/x-test", proplists:get_value("content-type", Headers)),
        {206, _, Part} = raw(get, Att, [{"range", "bytes=10-19"}], none),
        ?assertEqual(binary:part(Data, 10, 10), Part),
        %% One byte over the limit: 413, and the document keeps its revision.
        ?assertMatch({413, #{<<"error">> := <<"attachment_too_large">>}},
                     Put(<<Data/binary, 0>>)),
        ?assertMatch({ok, #{<<"_rev">> := Rev}}, barrel:fetch_doc(B, <<"d">>))
    end).

cors() ->
    AllowOrigin = fun(Url, Origin) ->
                          {200, Headers, _} = raw(get, Url ++ "/", [{"origin", Origin}], none),
                          proplists:get_value("access-control-allow-origin", Headers)
                  end,
    with_server(#{cors => [<<"http://app.example">>]}, fun(Url) ->
        ?assertEqual("http://app.example", AllowOrigin(Url, "http://app.example")),
        ?assertEqual(undefined, AllowOrigin(Url, "http://other.example"))
    end),
    with_server(#{cors => any}, fun(Url) ->
        ?assertEqual("http://other.example", AllowOrigin(Url, "http://other.example"))
    end),
    with_server(#{}, fun(Url) ->
        ?assertEqual(undefined, AllowOrigin(Url, "http://app.example"))
    end).

tls() ->
    Dir = barrel_test_setup:tmp_dir(),
    try
        {Cert, Key} = self_signed(Dir),
        {Http, Url} = start(#{tls => {Cert, Key}}),
        try
            Port = port(Http),
            ?assertEqual("https://127.0.0.1:" ++ integer_to_list(Port), Url),
            ?assertMatch({200, #{<<"barrel">> := <<"Welcome">>}}, http_get(Url ++ "/")),
            {Name, B} = fresh(),
            {ok, <<"a">>, Rev} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
            ?assertEqual({200, #{<<"id">> => <<"a">>, <<"_rev">> => Rev}},
                         http_get(Url ++ "/barrels/" ++ Name ++ "/docs/a")),
            %% No plain http on a tls port.
            ?assertMatch({error, _},
                         httpc:request("http://127.0.0.1:" ++ integer_to_list(Port) ++ "/"))
        after
            ok = barrel:stop_http(Http)
        end,
        %% File names as binaries work too.
        {ok, Http2} = barrel:start_http(#{port => 0, tls => {list_to_binary(Cert),
                                                             list_to_binary(Key)}}),
        ?assertMatch({ok, #{url := <<"https://", _/binary>>}}, barrel:http_info(Http2)),
        ok = barrel:stop_http(Http2)
    after
        barrel_test_setup:rm_dir(Dir)
    end.

self_signed(Dir) ->
    Cert = filename:join(Dir, "cert.pem"),
    Key = filename:join(Dir, "key.pem"),
    Out = os:cmd("openssl req -x509 -newkey rsa:2048 -nodes -keyout " ++ Key ++ " -out " ++ Cert
                 ++ " -days 1 -subj /CN=localhost 2>&1"),
    case filelib:is_regular(Cert) andalso filelib:is_regular(Key) of
        true -> {Cert, Key};
        false -> error({openssl_failed, Out})
    end.

tls_missing_files() ->
    Dir = barrel_test_setup:tmp_dir(),
    try
        Cert = filename:join(Dir, "missing-cert.pem"),
        Key = filename:join(Dir, "missing-key.pem"),
        {error, {bad_param, Message}} = barrel:start_http(#{port => 0, tls => {Cert, Key}}),
        ?assertNotEqual(nomatch, string:find(Message, Cert)),
        %% A key that is not a key.
        ok = file:write_file(Cert, <<"not a certificate">>),
        ok = file:write_file(Key, <<"not a key">>),
        ?assertMatch({error, {bad_param, _}}, barrel:start_http(#{port => 0, tls => {Cert, Key}}))
    after
        barrel_test_setup:rm_dir(Dir)
    end.

%% Last: it restarts the application.
application_stop() ->
    {Name, _} = fresh(),
    {Http, Url} = start(#{}),
    Port = port(Http),
    Longpoll = Url ++ "/barrels/" ++ Name ++ "/_changes?feed=longpoll&timeout=30000",
    Self = self(),
    spawn_link(fun() ->
                       Self ! {longpoll, httpc:request(get, {Longpoll, []}, [{timeout, 30000}], [])}
               end),
    ?assertEqual(nothing, answer(longpoll, 300)),
    %% A waiting request does not hold the application up.
    ok = application:stop(barrel),
    try
        refused(Port),
        ?assertMatch({error, _}, answer(longpoll, 5000)),
        ?assertEqual({error, not_found}, barrel:http_info(Http)),
        ?assertEqual({error, not_found}, barrel:stop_http(Http)),
        ?assertEqual({error, closed}, barrel:start_http(#{port => 0}))
    after
        {ok, _} = application:ensure_all_started(barrel)
    end,
    %% Servers start again with the application.
    with_server(#{}, fun(Url2) ->
        ?assertMatch({200, #{<<"db_name">> := _}}, http_get(Url2 ++ "/barrels/" ++ Name))
    end).
