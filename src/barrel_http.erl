%% @doc The HTTP and WebSocket API inside the BEAM: a supervised process owning
%% one server over the node's store (the same server the standalone `barreld'
%% runs). Start one with {@link barrel:start_http/1}; it stops with
%% {@link barrel:stop_http/1} or with the application. Routes: README, "HTTP
%% routes".
-module(barrel_http).
-behaviour(gen_server).

-export([start/1, stop/1, info/1, child_spec/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(SUP, barrel_http_sup).
-define(MAX_BODY, 67108864).
%% 16 GiB, the engine's default attachment limit.
-define(MAX_ATTACHMENT, 17179869184).

%% @private The supervisor spec of the servers' supervisor (in `barrel_sup').
child_spec() ->
    #{id => ?SUP,
      start => {supervisor, start_link, [{local, ?SUP}, ?MODULE, sup]},
      type => supervisor}.

%% @doc Starts a server; see {@link barrel:start_http/1} for the options.
-spec start(map()) -> {ok, pid()} | {error, term()}.
start(Opts) ->
    case args(Opts) of
        {ok, Args} ->
            try supervisor:start_child(?SUP, [Args, []]) of
                {error, {shutdown, Reason}} -> {error, Reason};
                Other -> Other
            catch exit:{noproc, _} -> {error, closed}
            end;
        Error ->
            Error
    end.

%% @doc Stops a server.
-spec stop(pid()) -> ok | {error, not_found}.
stop(Pid) when is_pid(Pid) ->
    case is_server(Pid) andalso supervisor:terminate_child(?SUP, Pid) of
        ok -> ok;
        _ -> {error, not_found}
    end;
stop(_) ->
    {error, not_found}.

%% @doc Where a server listens: `{ok, #{ip, port, url}}'.
-spec info(pid()) -> {ok, map()} | {error, not_found}.
info(Pid) ->
    case is_server(Pid) of
        true ->
            try gen_server:call(Pid, {?MODULE, info}, 5000)
            catch exit:_ -> {error, not_found}
            end;
        false ->
            {error, not_found}
    end.

%% Only our own servers are asked anything: another process could take the call badly.
is_server(Pid) when is_pid(Pid) ->
    try supervisor:which_children(?SUP) of
        Children -> lists:keymember(Pid, 2, Children)
    catch exit:_ -> false
    end;
is_server(_) ->
    false.

args(Opts) when is_map(Opts) ->
    Defaults = #{ip => {127, 0, 0, 1}, port => 7080, basic_auth => [], tokens => [],
                 tls => undefined, cors => none, max_body => ?MAX_BODY,
                 max_attachment_size => ?MAX_ATTACHMENT},
    case barrel:check_options(Opts, Defaults, fun option_ok/2) of
        {ok, O} -> {ok, O};
        Error -> Error
    end;
args(Opts) ->
    {error, {bad_option, Opts}}.

option_ok(ip, V) -> is_tuple(V) andalso ip_text(V) =/= error;
option_ok(port, V) -> is_integer(V) andalso V >= 0 andalso V < 65536;
option_ok(basic_auth, V) ->
    is_list(V) andalso lists:all(fun({U, P}) -> is_binary(U) andalso is_binary(P);
                                    (_) -> false
                                 end, V);
option_ok(tokens, V) -> is_list(V) andalso lists:all(fun is_binary/1, V);
option_ok(tls, undefined) -> true;
option_ok(tls, {C, K}) -> is_path(C) andalso is_path(K);
option_ok(tls, _) -> false;
option_ok(cors, V) -> V =:= none orelse V =:= any
                          orelse (is_list(V) andalso lists:all(fun is_binary/1, V));
option_ok(max_body, V) -> is_integer(V) andalso V > 0;
option_ok(max_attachment_size, V) -> is_integer(V) andalso V >= 0.

is_path(P) ->
    try is_binary(unicode:characters_to_binary(P))
    catch error:_ -> false
    end.

ip_text(Ip) ->
    case inet:ntoa(Ip) of
        {error, _} -> error;
        Text -> list_to_binary(Text)
    end.

%% @private
init(sup) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => http, start => {gen_server, start_link, [?MODULE]},
             restart => temporary, shutdown => 10000}]}};
init(#{ip := Ip, port := Port, basic_auth := Basic, tokens := Tokens, tls := Tls, cors := Cors,
       max_body := MaxBody, max_attachment_size := MaxAttachment}) ->
    process_flag(trap_exit, true),
    TlsArg = case Tls of
                 undefined -> undefined;
                 {C, K} -> {unicode:characters_to_binary(C), unicode:characters_to_binary(K)}
             end,
    case barrel_nif:http_start(ip_text(Ip), Port, Basic, Tokens, TlsArg, Cors, MaxBody,
                               MaxAttachment) of
        {ok, Server, Actual} ->
            Scheme = case Tls of undefined -> "http"; _ -> "https" end,
            Host = case Ip of
                       {_, _, _, _} -> ip_text(Ip);
                       _ -> <<"[", (ip_text(Ip))/binary, "]">>
                   end,
            Url = iolist_to_binary([Scheme, "://", Host, ":", integer_to_list(Actual)]),
            {ok, #{server => Server, info => #{ip => Ip, port => Actual, url => Url}}};
        {error, Reason} ->
            %% A shutdown reason: a refused start is an answer, not a crash to report.
            {stop, {shutdown, Reason}}
    end.

%% @private
handle_call({?MODULE, info}, _From, #{info := Info} = St) ->
    {reply, {ok, Info}, St};
handle_call(_Req, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
handle_info(_Msg, St) ->
    {noreply, St}.

%% @private
terminate(_Reason, #{server := Server}) ->
    barrel_nif:http_stop(Server),
    ok.
