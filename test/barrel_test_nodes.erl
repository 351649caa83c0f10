%% @doc Remote Barrel nodes for the EUnit suites: `barreld' processes on
%% loopback, each on its own data directory, that a test can kill (`kill -9')
%% and restart on the same directory and port; and JSON over HTTP to talk to
%% them (with httpc: the suite starts `inets').
%%
%% Every node is watched by a keeper process that owns its port. A barreld
%% only stops on a signal, so it runs under a small shell that kills it
%% (`kill -9' by OS pid) when told to, or when its standard input closes: the
%% keeper exiting, or the whole VM going away, never leaves a barreld behind.
%% The keeper also stops its node when the process that started it exits.
%% barreld's standard error comes through the port, not to the test output.
-module(barrel_test_nodes).

-export([build/0, start/0, start/1, stop/1, kill/1, restart/1, with_nodes/2,
         host/1, url/2, ws_url/2,
         request/4, get/2, put/3, delete/2, json_encode/1, json_decode/1]).

-type node_ref() :: #{keeper := pid(), port := inet:port_number(), dir := file:filename(),
                      auth := undefined | string()}.
-export_type([node_ref/0]).

-define(START_TIMEOUT, 15000).

%% The shell around barreld: waits for `stop' or the end of its input, then
%% kills barreld by its pid and reaps it. A background job's input is
%% /dev/null, so barreld never reads the keeper's lines.
-define(WRAPPER,
        "\"$@\" &\n"
        "child=$!\n"
        "while read -r line; do [ \"$line\" = stop ] && break; done\n"
        "kill -9 \"$child\" 2>/dev/null\n"
        "wait \"$child\"\n"
        "exit 0\n").

%% ---------------------------------------------------------------------------
%% Nodes
%% ---------------------------------------------------------------------------

%% @doc Builds barreld (`cargo build --release -p barreld' in the shared
%% target directory): quick when it is up to date.
-spec build() -> ok.
build() ->
    %% The checkout barrel was compiled from.
    Source = proplists:get_value(source, barrel:module_info(compile)),
    Src = filename:dirname(filename:dirname(Source)),
    Cmd = "cd '" ++ Src ++ "' && CARGO_TARGET_DIR='" ++ target_dir() ++ "' " ++ cargo()
        ++ " build --release -q -p barreld 2>&1; echo \"exit:$?\"",
    Out = os:cmd(Cmd),
    case string:find(Out, "exit:0") of
        nomatch -> error({barreld_build_failed, Out});
        _ -> ok
    end.

%% @equiv start(#{})
-spec start() -> node_ref().
start() ->
    start(#{}).

%% @doc Starts a barreld on a new data directory and a free port. Options:
%% `tokens' (bearer tokens it requires; `request/4' then sends the first).
-spec start(map()) -> node_ref().
start(Opts) ->
    Owner = self(),
    Tokens = maps:get(tokens, Opts, []),
    Dir = barrel_test_setup:tmp_dir(),
    Keeper = spawn(fun() -> keeper_init(Owner, Dir, Tokens) end),
    case call(Keeper, start, ?START_TIMEOUT + 5000) of
        {ok, Port} ->
            Auth = case Tokens of [] -> undefined; [T | _] -> "Bearer " ++ T end,
            #{keeper => Keeper, port => Port, dir => Dir, auth => Auth};
        {error, Reason} ->
            error({barreld_start_failed, Reason})
    end.

%% @doc Stops the node (if it runs) and removes its data directory.
-spec stop(node_ref()) -> ok.
stop(#{keeper := Keeper}) ->
    case is_process_alive(Keeper) of
        true -> call(Keeper, stop, 30000);
        false -> ok
    end.

%% @doc Kills the node with `kill -9' and waits until it is gone; its data
%% directory and port stay for {@link restart/1}.
-spec kill(node_ref()) -> ok.
kill(#{keeper := Keeper}) ->
    call(Keeper, kill, 30000).

%% @doc Starts a killed node again, on the same data directory and port.
-spec restart(node_ref()) -> ok.
restart(#{keeper := Keeper}) ->
    case call(Keeper, restart, ?START_TIMEOUT + 5000) of
        {ok, _Port} -> ok;
        {error, Reason} -> error({barreld_restart_failed, Reason})
    end.

%% @doc Runs `Fun([Node])' with N new nodes, all stopped afterwards whatever
%% happens.
-spec with_nodes(pos_integer(), fun(([node_ref()]) -> T)) -> T.
with_nodes(N, Fun) ->
    Nodes = [start() || _ <- lists:seq(1, N)],
    try Fun(Nodes)
    after [stop(Node) || Node <- Nodes]
    end.

%% @doc `<<"127.0.0.1:PORT">>', as `p2p_write' and `p2p_read' hops take it.
-spec host(node_ref()) -> binary().
host(#{port := Port}) ->
    iolist_to_binary(["127.0.0.1:", integer_to_list(Port)]).

%% @doc The CouchDB-protocol URL of barrel `Name' on the node.
-spec url(node_ref(), binary()) -> binary().
url(Node, Name) ->
    <<"http://", (host(Node))/binary, "/barrels/", Name/binary>>.

%% @doc The WebSocket URL of barrel `Name' on the node, in the short form.
-spec ws_url(node_ref(), binary()) -> binary().
ws_url(Node, Name) ->
    <<"ws://", (host(Node))/binary, "/", Name/binary>>.

call(Keeper, Req, Timeout) ->
    Ref = erlang:monitor(process, Keeper),
    Keeper ! {Req, self(), Ref},
    receive
        {Ref, Reply} -> erlang:demonitor(Ref, [flush]), Reply;
        {'DOWN', Ref, process, Keeper, Reason} -> error({barreld_keeper_down, Reason})
    after Timeout ->
        erlang:demonitor(Ref, [flush]),
        error({barreld_keeper_timeout, Req})
    end.

%% The keeper: owns the port of the wrapper shell, and the node's directory.
keeper_init(Owner, Dir, Tokens) ->
    process_flag(trap_exit, true),
    OwnerRef = erlang:monitor(process, Owner),
    St = #{owner => OwnerRef, dir => Dir, tokens => Tokens, port => 0, wrapper => undefined},
    keeper_loop(St).

keeper_loop(#{owner := OwnerRef} = St) ->
    receive
        {start, From, Ref} ->
            reply(From, Ref, St, launch(St));
        {restart, From, Ref} ->
            reply(From, Ref, St, launch(down(St)));
        {kill, From, Ref} ->
            St1 = down(St),
            From ! {Ref, ok},
            keeper_loop(St1);
        {stop, From, Ref} ->
            finish(St),
            From ! {Ref, ok};
        {'DOWN', OwnerRef, process, _, _} ->
            finish(St);
        {'EXIT', _, _} ->
            keeper_loop(St);
        {Wrapper, _} when is_port(Wrapper) ->
            %% barreld's output: nothing to do with it.
            keeper_loop(St)
    end.

reply(From, Ref, _St, {ok, St1}) ->
    From ! {Ref, {ok, maps:get(port, St1)}},
    keeper_loop(St1);
reply(From, Ref, St, {error, Reason, St1}) ->
    From ! {Ref, {error, Reason}},
    keeper_loop(St1#{port => maps:get(port, St)}).

finish(St) ->
    _ = down(St),
    barrel_test_setup:rm_dir(maps:get(dir, St)).

%% Starts barreld under the wrapper and waits for its listening line.
launch(#{dir := Dir, port := Port, tokens := Tokens} = St) ->
    Args = ["--data-dir", Dir, "--port", integer_to_list(Port)]
        ++ lists:append([["--token", T] || T <- Tokens]),
    Wrapper = open_port({spawn_executable, "/bin/sh"},
                        [{args, ["-c", ?WRAPPER, "barreld-wrapper", barreld() | Args]},
                         {line, 4096}, binary, exit_status, use_stdio, stderr_to_stdout]),
    St1 = St#{wrapper => Wrapper},
    Deadline = erlang:monotonic_time(millisecond) + ?START_TIMEOUT,
    await_listening(St1, Deadline, []).

await_listening(#{wrapper := W} = St, Deadline, Lines) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {W, {data, {eol, <<"barreld listening on http://127.0.0.1:", P/binary>>}}} ->
            {ok, St#{port => binary_to_integer(P)}};
        {W, {data, {_, Line}}} ->
            await_listening(St, Deadline, [Line | Lines]);
        {W, {exit_status, Status}} ->
            {error, {exited, Status, lists:reverse(Lines)}, St#{wrapper => undefined}}
    after Left ->
        {error, {no_listening_line, lists:reverse(Lines)}, down(St)}
    end.

%% Kills barreld (if it runs) and waits for the wrapper to have reaped it.
down(#{wrapper := undefined} = St) ->
    St;
down(#{wrapper := W} = St) ->
    try port_command(W, <<"stop\n">>) of
        true -> await_exit(W)
    catch error:badarg -> ok  % the wrapper is already gone
    end,
    St#{wrapper => undefined}.

await_exit(W) ->
    receive
        {W, {exit_status, _}} -> ok;
        {W, {data, _}} -> await_exit(W)
    after 20000 ->
        %% Closing the port ends the wrapper's input: it kills barreld too.
        catch port_close(W),
        ok
    end.

barreld() ->
    Exe = filename:join([target_dir(), "release", "barreld"]),
    case filelib:is_regular(Exe) of
        true -> Exe;
        false -> error({barreld_not_built, Exe})
    end.

target_dir() ->
    case os:getenv("CARGO_TARGET_DIR") of
        Dir when is_list(Dir), Dir =/= "" -> Dir;
        _ -> filename:join([os:getenv("HOME"), ".cache", "barrel-target"])
    end.

cargo() ->
    case os:find_executable("cargo") of
        false -> filename:join([os:getenv("HOME"), ".cargo", "bin", "cargo"]);
        Cargo -> Cargo
    end.

%% ---------------------------------------------------------------------------
%% JSON over HTTP
%% ---------------------------------------------------------------------------

%% @doc `{Status, DecodedBody}' of a request to `Path' on the node; `Body' is
%% a term sent as JSON, or `none'. Connections are not reused: a killed node
%% leaves none behind to fail the next request.
-spec request(atom(), node_ref(), string() | binary(), term()) -> {integer(), term()}.
request(Method, #{port := Port, auth := Auth}, Path, Body) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ unicode:characters_to_list(Path),
    Headers = [{"connection", "close"}]
        ++ [{"authorization", Auth} || Auth =/= undefined],
    Req = case Body of
              none -> {Url, Headers};
              _ -> {Url, Headers, "application/json", json_encode(Body)}
          end,
    case httpc:request(Method, Req, [{timeout, 15000}], [{body_format, binary}]) of
        {ok, {{_, Status, _}, _, <<>>}} -> {Status, none};
        {ok, {{_, Status, _}, _, RespBody}} -> {Status, json_decode(RespBody)};
        {error, Reason} -> error({http_request_failed, Method, Url, Reason})
    end.

get(Node, Path) -> request(get, Node, Path, none).
put(Node, Path, Body) -> request(put, Node, Path, Body).
delete(Node, Path) -> request(delete, Node, Path, none).

%% @doc JSON text of a term: maps with binary keys, lists, binaries, numbers,
%% `true', `false', `null'.
-spec json_encode(term()) -> iodata().
json_encode(null) -> <<"null">>;
json_encode(true) -> <<"true">>;
json_encode(false) -> <<"false">>;
json_encode(N) when is_integer(N) -> integer_to_binary(N);
json_encode(F) when is_float(F) -> float_to_binary(F, [short]);
json_encode(B) when is_binary(B) -> [$", json_escape(B, <<>>), $"];
json_encode(L) when is_list(L) -> [$[, lists:join($,, [json_encode(V) || V <- L]), $]];
json_encode(M) when is_map(M) ->
    [${, lists:join($,, [[json_encode(K), $:, json_encode(V)] || {K, V} <- maps:to_list(M)]),
     $}].

json_escape(<<>>, Acc) -> Acc;
json_escape(<<$", R/binary>>, Acc) -> json_escape(R, <<Acc/binary, "\\\"">>);
json_escape(<<$\\, R/binary>>, Acc) -> json_escape(R, <<Acc/binary, "\\\\">>);
json_escape(<<C, R/binary>>, Acc) when C < 16#20 ->
    Hex = iolist_to_binary(io_lib:format("\\u~4.16.0b", [C])),
    json_escape(R, <<Acc/binary, Hex/binary>>);
json_escape(<<C, R/binary>>, Acc) -> json_escape(R, <<Acc/binary, C>>).

%% @doc The term of a JSON text: objects become maps with binary keys, null is
%% `null'.
-spec json_decode(binary()) -> term().
json_decode(Bin) ->
    {Value, Rest} = value(ws(Bin)),
    <<>> = ws(Rest),
    Value.

value(<<${, R/binary>>) ->
    case ws(R) of
        <<$}, R1/binary>> -> {#{}, R1};
        R1 -> members(R1, #{})
    end;
value(<<$[, R/binary>>) ->
    case ws(R) of
        <<$], R1/binary>> -> {[], R1};
        R1 -> elements(R1, [])
    end;
value(<<$", R/binary>>) -> string(R, <<>>);
value(<<"true", R/binary>>) -> {true, R};
value(<<"false", R/binary>>) -> {false, R};
value(<<"null", R/binary>>) -> {null, R};
value(R) -> number(R, <<>>).

members(<<$", R/binary>>, Acc) ->
    {Key, R1} = string(R, <<>>),
    <<$:, R2/binary>> = ws(R1),
    {Value, R3} = value(ws(R2)),
    case ws(R3) of
        <<$,, R4/binary>> -> members(ws(R4), Acc#{Key => Value});
        <<$}, R4/binary>> -> {Acc#{Key => Value}, R4}
    end.

elements(R, Acc) ->
    {Value, R1} = value(R),
    case ws(R1) of
        <<$,, R2/binary>> -> elements(ws(R2), [Value | Acc]);
        <<$], R2/binary>> -> {lists:reverse([Value | Acc]), R2}
    end.

string(<<$", R/binary>>, Acc) -> {Acc, R};
string(<<"\\u", Hex:4/binary, R/binary>>, Acc) ->
    case {binary_to_integer(Hex, 16), R} of
        {Hi, <<"\\u", Lo:4/binary, R1/binary>>} when Hi >= 16#D800, Hi < 16#DC00 ->
            %% A surrogate pair.
            C = 16#10000 + ((Hi - 16#D800) bsl 10) + (binary_to_integer(Lo, 16) - 16#DC00),
            string(R1, <<Acc/binary, C/utf8>>);
        {C, _} ->
            string(R, <<Acc/binary, C/utf8>>)
    end;
string(<<$\\, C, R/binary>>, Acc) ->
    Char = case C of $n -> $\n; $t -> $\t; $r -> $\r; $b -> $\b; $f -> $\f; _ -> C end,
    string(R, <<Acc/binary, Char>>);
string(<<C, R/binary>>, Acc) -> string(R, <<Acc/binary, C>>).

number(<<C, R/binary>>, Acc) when C >= $0, C =< $9; C =:= $-; C =:= $+;
                                  C =:= $.; C =:= $e; C =:= $E ->
    number(R, <<Acc/binary, C>>);
number(R, Acc) ->
    try {binary_to_integer(Acc), R}
    catch error:badarg ->
            %% Erlang's floats need a fraction: 1e3 reads as 1.0e3.
            case binary:match(Acc, <<".">>) of
                nomatch ->
                    [M, E] = binary:split(Acc, [<<"e">>, <<"E">>]),
                    {binary_to_float(<<M/binary, ".0e", E/binary>>), R};
                _ ->
                    {binary_to_float(Acc), R}
            end
    end.

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\n; C =:= $\r; C =:= $\t -> ws(R);
ws(R) -> R.
