%% @doc Replications: supervised processes, each owning one engine replication
%% (two with `sync'), started by {@link barrel:replicate/2}. The engine runs
%% the algorithm on its own thread (see README, "Replication") and reports
%% progress to this process, which keeps it in the `barrel_replications' table
%% (so {@link barrel:replication_info/1} answers after the end too) and
%% forwards it to the `to' process.
%%
%% Persistent replications (`persist => true') are written to
%% `replications.config' in the data directory and started again with the
%% application.
-module(barrel_replicator).
-behaviour(gen_server).

-export([start/2, cancel/1, info/1, child_spec/0, restore/0, endpoint/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(SUP, barrel_replicator_sup).
-define(TAB, barrel_replications).
-define(PERSIST_FILE, "replications.config").
%% Ended replications whose info `replication_info/1' still answers; older ones are forgotten.
-define(KEEP_ENDED, 100).

%% @private The supervisor of replications (in `barrel_sup').
child_spec() ->
    #{id => ?SUP,
      start => {supervisor, start_link, [{local, ?SUP}, ?MODULE, sup]},
      type => supervisor}.

%% @doc Starts a replication; see {@link barrel:replicate/2}.
-spec start(map(), map()) -> {ok, binary()} | {error, term()}.
start(Spec, Opts) ->
    case prepare(Spec, Opts) of
        {ok, Args} -> launch(Args);
        Error -> Error
    end.

launch(#{id := Id} = Args) ->
    try supervisor:start_child(?SUP, [Args, []]) of
        {ok, _Pid} -> {ok, Id};
        {error, {shutdown, Reason}} -> {error, Reason};
        {error, Reason} -> {error, Reason}
    catch exit:{noproc, _} -> {error, closed}
    end.

%% @doc Stops a replication (a persistent one is forgotten too).
-spec cancel(binary()) -> ok | {error, not_found}.
cancel(Id) ->
    forget(Id),
    case lookup(Id) of
        {ok, #{pid := Pid}} when is_pid(Pid) ->
            case is_process_alive(Pid) of
                true -> _ = supervisor:terminate_child(?SUP, Pid), ok;
                false -> ok
            end;
        {ok, _} -> ok;
        error -> {error, not_found}
    end.

%% @doc The state and counters of a replication.
-spec info(binary()) -> {ok, map()} | {error, not_found}.
info(Id) ->
    case lookup(Id) of
        {ok, Info} -> {ok, maps:remove(pid, Info)};
        error -> {error, not_found}
    end.

lookup(Id) ->
    try ets:lookup(?TAB, Id) of
        [{_, Info}] -> {ok, Info};
        [{_, Info, _EndedAt}] -> {ok, Info};
        [] -> error
    catch error:badarg -> error
    end.

%% ---------------------------------------------------------------------------
%% Options

prepare(Spec, Opts) when is_map(Spec), is_map(Opts) ->
    Defaults = #{continuous => false, filter => [], since => undefined, batch_size => 500,
                 sync => false, to => undefined, persist => false, create_target => true,
                 auth => undefined, tls_ca => undefined, id => undefined},
    case barrel:check_options(Opts, Defaults, fun option_ok/2) of
        {ok, O} ->
            Source = maps:get(<<"source">>, Spec, maps:get(source, Spec, undefined)),
            Target = maps:get(<<"target">>, Spec, maps:get(target, Spec, undefined)),
            case {endpoint(Source), endpoint(Target)} of
                {{ok, S}, {ok, T}} ->
                    Id = case maps:get(id, O) of
                             undefined -> new_id();
                             Given -> Given
                         end,
                    {ok, O#{id => Id, source => S, target => T, spec => Spec,
                            source_text => Source, target_text => Target}};
                {{error, _}, _} -> {error, {bad_endpoint, Source}};
                {_, {error, _}} -> {error, {bad_endpoint, Target}}
            end;
        Error ->
            Error
    end;
prepare(Spec, Opts) when is_map(Spec) ->
    {error, {bad_option, Opts}};
prepare(Spec, _Opts) ->
    {error, {bad_arg, Spec}}.

option_ok(continuous, V) -> is_boolean(V);
option_ok(filter, V) -> is_binary(V) orelse barrel:is_pattern_list(V);
option_ok(since, V) -> V =:= undefined orelse (is_integer(V) andalso V >= 0);
option_ok(batch_size, V) -> is_integer(V) andalso V > 0 andalso V =< 100000;
option_ok(sync, V) -> is_boolean(V);
option_ok(to, V) -> V =:= undefined orelse is_pid(V);
option_ok(persist, V) -> is_boolean(V);
option_ok(create_target, V) -> is_boolean(V);
option_ok(auth, undefined) -> true;
option_ok(auth, {basic, U, P}) -> is_binary(U) andalso is_binary(P);
option_ok(auth, {bearer, T}) -> is_binary(T);
option_ok(auth, _) -> false;
option_ok(tls_ca, V) ->
    V =:= undefined orelse
        (try is_binary(unicode:characters_to_binary(V)) catch error:_ -> false end);
option_ok(id, V) -> V =:= undefined orelse is_binary(V).

%% @private An endpoint as the engine takes it: a local barrel name, or a URL:
%% `http(s)://...' (CouchDB protocol), `ws(s)://...' (Barrel's stream).
endpoint(<<"http://", _/binary>> = U) -> {ok, {http, U}};
endpoint(<<"https://", _/binary>> = U) -> {ok, {http, U}};
endpoint(<<"ws://", _/binary>> = U) -> {ok, {ws, U}};
endpoint(<<"wss://", _/binary>> = U) -> {ok, {ws, U}};
endpoint(Name) when is_binary(Name), byte_size(Name) > 0 -> {ok, {local, Name}};
endpoint(L) when is_list(L) ->
    try endpoint(unicode:characters_to_binary(L)) catch _:_ -> {error, bad} end;
endpoint(_) -> {error, bad}.

auth_header(undefined) -> undefined;
auth_header({basic, U, P}) -> <<"Basic ", (base64:encode(<<U/binary, ":", P/binary>>))/binary>>;
auth_header({bearer, T}) -> <<"Bearer ", T/binary>>.

new_id() ->
    <<"rep-", (binary:encode_hex(rand:bytes(8)))/binary>>.

%% ---------------------------------------------------------------------------
%% Persistence

persist_file() ->
    filename:join(application:get_env(barrel, data_dir, "barrel_data"), ?PERSIST_FILE).

persisted() ->
    case file:consult(persist_file()) of
        {ok, Terms} -> [T || {replication, _, _, _} = T <- Terms];
        {error, _} -> []
    end.

write_persisted(Terms) ->
    Text = [io_lib:format("~p.~n", [T]) || T <- Terms],
    _ = file:write_file(persist_file(), Text),
    ok.

remember(#{persist := true, id := Id, spec := Spec} = O) ->
    Opts = maps:without([id, source, target, spec, source_text, target_text, to, persist], O),
    write_persisted([T || {replication, I, _, _} = T <- persisted(), I =/= Id]
                    ++ [{replication, Id, Spec, Opts}]);
remember(_) ->
    ok.

forget(Id) ->
    case [T || {replication, I, _, _} = T <- persisted(), I =:= Id] of
        [] -> ok;
        _ -> write_persisted([T || {replication, I, _, _} = T <- persisted(), I =/= Id])
    end.

%% @private Starts the persistent replications again (the application does at start).
restore() ->
    [case start(Spec, Opts#{id => Id, persist => true}) of
         {ok, _} -> ok;
         {error, Reason} ->
             %% Kept in the file: the next start tries again.
             logger:warning("barrel: persistent replication ~ts not restarted: ~p", [Id, Reason])
     end || {replication, Id, Spec, Opts} <- persisted()],
    ok.

%% ---------------------------------------------------------------------------

%% @private
init(sup) ->
    ets:new(?TAB, [named_table, public, set]),
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => replication, start => {gen_server, start_link, [?MODULE]},
             restart => temporary, shutdown => 30000}]}};
init(#{id := Id, source := S, target := T, sync := Sync} = O) ->
    process_flag(trap_exit, true),
    Legs = case Sync of
               true -> [{push, S, T}, {pull, T, S}];
               false -> [{push, S, T}]
           end,
    case start_legs(Legs, O, []) of
        {ok, Started} ->
            remember(O),
            St = #{id => Id, opts => O, legs => Started,
                   progress => maps:from_list([{Leg, #{state => running}} || {Leg, _, _} <- Started])},
            publish(St),
            {ok, St};
        {error, Reason} ->
            {stop, {shutdown, Reason}}
    end.

start_legs([], _O, Acc) ->
    {ok, lists:reverse(Acc)};
start_legs([{Leg, S, T} | Rest], O, Acc) ->
    #{continuous := C, batch_size := B, since := Since, filter := F0, auth := Auth,
      create_target := Create, tls_ca := Ca0} = O,
    Ca = case Ca0 of undefined -> undefined; _ -> unicode:characters_to_binary(Ca0) end,
    F = case is_binary(F0) of true -> [F0]; false -> F0 end,
    Tag = erlang:unique_integer([positive]),
    Opts = {C, B, Since, F, auth_header(Auth), Create, Ca},
    case barrel_nif:replication_start(S, T, Opts, self(), Tag) of
        {ok, Rep} ->
            start_legs(Rest, O, [{Leg, Tag, Rep} | Acc]);
        {error, _} = Error ->
            [barrel_nif:replication_cancel(R) || {_, _, R} <- Acc],
            Error
    end.

%% @private
handle_call(_Req, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
handle_info({barrel_rep, Tag, Progress}, #{legs := Legs, progress := P} = St) ->
    case lists:keyfind(Tag, 2, Legs) of
        {Leg, _, _} ->
            St1 = St#{progress => P#{Leg => Progress}},
            publish(St1),
            notify(St1, Leg, Progress),
            case finished(St1) of
                true -> {stop, normal, St1};
                false -> {noreply, St1}
            end;
        false ->
            {noreply, St}
    end;
handle_info({'EXIT', _, Reason}, St) ->
    {stop, Reason, St};
handle_info(_Msg, St) ->
    {noreply, St}.

%% @private
terminate(_Reason, #{legs := Legs} = St) ->
    [barrel_nif:replication_cancel(R) || {_, _, R} <- Legs],
    %% The final counters, as the engine left them.
    P = maps:from_list([{Leg, barrel_nif:replication_progress(R)} || {Leg, _, R} <- Legs]),
    St1 = St#{progress => P},
    publish(St1, undefined),
    prune(),
    %% The `to' process hears how it ended (a cancel's last report arrives only now).
    [notify(St1, Leg, Progress) || {Leg, Progress} <- maps:to_list(P),
                                   maps:get(state, Progress) =:= cancelled],
    ok.

finished(#{progress := P}) ->
    lists:all(fun(#{state := S}) -> lists:member(S, [completed, failed, cancelled]) end,
              maps:values(P)).

publish(St) ->
    publish(St, self()).

publish(#{id := Id, opts := O, progress := P}, Pid) ->
    Legs = maps:values(P),
    Sum = fun(K) -> lists:sum([maps:get(K, L, 0) || L <- Legs]) end,
    State = overall([maps:get(state, L, running) || L <- Legs]),
    Errors = [E || L <- Legs, E <- [maps:get(last_error, L, undefined)], E =/= undefined],
    Info = #{id => Id, pid => Pid, state => State,
             source => maps:get(source_text, O), target => maps:get(target_text, O),
             continuous => maps:get(continuous, O), sync => maps:get(sync, O),
             docs_read => Sum(docs_read), docs_written => Sum(docs_written),
             attachments_copied => Sum(attachments_copied),
             attachment_bytes => Sum(attachment_bytes),
             %% The source sequence checkpointed by the push leg (sync: see legs).
             last_seq => maps:get(last_seq, maps:get(push, P, #{}), 0),
             errors => Sum(errors), last_error => case Errors of [] -> undefined; [E | _] -> E end,
             legs => P},
    case Pid of
        undefined -> ets:insert(?TAB, {Id, Info, erlang:monotonic_time()});
        _ -> ets:insert(?TAB, {Id, Info})
    end.

%% Forgets the oldest ended replications beyond ?KEEP_ENDED.
prune() ->
    Ended = lists:sort(ets:select(?TAB, [{{'$1', '_', '$2'}, [], [{{'$2', '$1'}}]}])),
    Extra = length(Ended) - ?KEEP_ENDED,
    [ets:delete(?TAB, Id) || {_, Id} <- lists:sublist(Ended, max(0, Extra))],
    ok.

overall(States) ->
    Order = [failed, retrying, running, idle, cancelled, completed],
    hd([S || S <- Order, lists:member(S, States)] ++ [running]).

notify(#{id := Id, opts := #{to := To}}, Leg, Progress) when is_pid(To) ->
    To ! {barrel_replication, Id, Progress#{leg => Leg}};
notify(_St, _Leg, _Progress) ->
    ok.
