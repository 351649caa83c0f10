%% @doc A listener: a process that hears a barrel's changes matching path
%% patterns, and hands them to a callback or to a process. Start one with
%% {@link barrel:start_listener/2} (supervised under `barrel_sup', stops with
%% its owner) or {@link start_link/2} (linked to the caller, for supervision
%% trees of your own).
%%
%% How it works. The listener subscribes to the engine (which then sends it the
%% matching changes of every commit, from its notifier thread or, for a small
%% commit, its writer thread, never making a writer wait), then replays the
%% changes feed from `since' in chunks. Live
%% changes that arrive meanwhile are held (at most one window of them) and
%% passed on after the replay, skipping those the replay already covered: the
%% listener remembers the sequence of the last change it passed on and only
%% ever passes on higher ones, so nothing is repeated, and since every commit is
%% either in the feed snapshot or delivered live, nothing is lost.
%%
%% Bounded memory. The engine hands a listener at most `window' changes it has
%% not acknowledged; past that it stops and sends `{barrel_behind, Tag}'. A
%% listener whose receiver (`to') has more than `max_queue' messages queued
%% stops passing changes on and stops acknowledging. Either way, once the
%% receiver has room the listener catches up from the feed from its last
%% sequence, then continues live. A slow receiver therefore costs a feed read,
%% never an unbounded mailbox.
-module(barrel_listener).
-behaviour(gen_server).

-export([start/2, start_link/2, stop/1, child_spec/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(SUP, barrel_listener_sup).
-define(CHUNK, 200).
-define(RETRY_MS, 10).
-define(ACK_EVERY, 64).
-define(SEQ_MAX, 18446744073709551615).

-record(st, {barrel, sub, tag, last = 0 :: non_neg_integer(),
             %% live | {replay, Cursor, UpdateSeq} | waiting
             mode = live,
             held = [] :: [map()],       % live changes held during a replay, newest first
             held_n = 0 :: non_neg_integer(),
             unacked = 0 :: non_neg_integer(),
             target,                     % {callback, Fun} | {to, Pid}
             max_queue, null, docs, all_docs, patterns}).

%% @private The supervisor spec of the listeners' supervisor (in `barrel_sup').
child_spec() ->
    #{id => ?SUP,
      start => {supervisor, start_link, [{local, ?SUP}, ?MODULE, sup]},
      type => supervisor}.

%% @doc Starts a listener under the `barrel' application's supervisor, owned by
%% the caller. See {@link barrel:start_listener/2} for the options.
-spec start(barrel:barrel() | barrel:barrel_name(), barrel:listener_opts()) ->
          {ok, pid()} | {error, term()}.
start(Barrel, Opts) ->
    case prepare(Barrel, Opts, self()) of
        {ok, Args} ->
            try unwrap(supervisor:start_child(?SUP, [Args, []]))
            catch exit:{noproc, _} -> {error, closed}
            end;
        Error ->
            Error
    end.

%% @doc Starts a listener linked to the caller (its owner), for use in a
%% supervision tree; options as for {@link barrel:start_listener/2}.
-spec start_link(barrel:barrel() | barrel:barrel_name(), barrel:listener_opts()) ->
          {ok, pid()} | {error, term()}.
start_link(Barrel, Opts) ->
    case prepare(Barrel, Opts, self()) of
        {ok, Args} -> unwrap(gen_server:start_link(?MODULE, Args, []));
        Error -> Error
    end.

terminate_child(Pid) ->
    try supervisor:terminate_child(?SUP, Pid)
    catch exit:_ -> {error, not_found}
    end.

%% A listener started with start_link/2 (only a listener is asked: another process could take
%% the call badly).
stop_linked(Pid) ->
    case proc_lib:translate_initial_call(Pid) of
        {?MODULE, init, 1} ->
            try gen_server:call(Pid, {?MODULE, stop}, 5000)
            catch exit:_ -> {error, not_found}
            end;
        _ ->
            {error, not_found}
    end.

unwrap({error, {error, Reason}}) -> {error, Reason};
unwrap(Other) -> Other.

%% @doc Stops a listener.
-spec stop(pid()) -> ok | {error, not_found}.
stop(Pid) when is_pid(Pid) ->
    %% (terminate_child/2 answers ok for any dead pid: check first.)
    case is_process_alive(Pid) andalso terminate_child(Pid) of
        false -> {error, not_found};
        ok -> ok;
        {error, not_found} -> stop_linked(Pid)
    end;
stop(_) ->
    {error, not_found}.

%% Option checks happen in the caller, so errors come back as {error, _}.
prepare(Name, Opts, Owner) when is_binary(Name) ->
    case barrel:open(Name) of
        {ok, Barrel} -> prepare(Barrel, Opts, Owner);
        Error -> Error
    end;
prepare(Barrel, Opts, Owner) when is_reference(Barrel), is_map(Opts) ->
    Defaults = #{subscribe_to => [<<"/*">>], since => now, callback_fun => undefined,
                 to => Owner, include_docs => false, style => main_only,
                 max_queue => 1000, window => 1000, null => null},
    case barrel:check_options(Opts, Defaults, fun option_ok/2) of
        {ok, #{subscribe_to := Patterns} = O} ->
            %% Check the patterns and the handle here too (an empty feed read), so that
            %% start_link/2 answers {error, _} instead of exiting its caller from init/1.
            try barrel_nif:changes_open(Barrel, ?SEQ_MAX, {false, false, false}, Patterns) of
                {ok, Cursor, _} ->
                    barrel_nif:changes_close(Cursor),
                    {ok, O#{barrel => Barrel, owner => Owner}};
                Error -> Error
            catch error:badarg -> {error, {bad_arg, barrel}}
            end;
        Error ->
            Error
    end;
prepare(Barrel, _Opts, _Owner) when not is_reference(Barrel) ->
    {error, {bad_arg, barrel}};
prepare(_Barrel, Opts, _Owner) ->
    {error, {bad_option, Opts}}.

option_ok(subscribe_to, V) -> barrel:is_pattern_list(V) andalso V =/= [];
option_ok(since, now) -> true;
option_ok(since, V) -> is_integer(V) andalso V >= 0;
option_ok(callback_fun, V) -> V =:= undefined orelse is_function(V, 1);
option_ok(to, V) -> is_pid(V);
option_ok(include_docs, V) -> is_boolean(V);
option_ok(style, V) -> V =:= main_only orelse V =:= all_docs;
option_ok(max_queue, V) -> is_integer(V) andalso V > 0;
option_ok(window, V) -> is_integer(V) andalso V > 0;
option_ok(null, V) -> is_atom(V).

%% ---------------------------------------------------------------------------

%% @private
init(sup) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => listener, start => {gen_server, start_link, [?MODULE]},
             restart => temporary, shutdown => 5000}]}};
init(#{barrel := Barrel, owner := Owner, subscribe_to := Patterns, since := Since,
       callback_fun := Fun, to := To, include_docs := Docs, style := Style,
       max_queue := MaxQueue, window := Window, null := Null}) ->
    process_flag(trap_exit, true),
    Tag = erlang:unique_integer([positive]),
    AllDocs = Style =:= all_docs,
    case barrel_nif:subscribe(Barrel, Patterns, {Docs, AllDocs}, Window, {self(), Tag}, Null) of
        {ok, Sub} ->
            erlang:monitor(process, Owner),
            Target = case Fun of
                         undefined -> erlang:monitor(process, To), {to, To};
                         _ -> {callback, Fun}
                     end,
            St = #st{barrel = Barrel, sub = Sub, tag = Tag, target = Target,
                     max_queue = MaxQueue, null = Null, docs = Docs, all_docs = AllDocs,
                     patterns = Patterns},
            case Since of
                now ->
                    %% Everything committed up to the subscription is "before now".
                    case barrel:barrel_infos(Barrel) of
                        {ok, #{updated_seq := Seq}} -> {ok, St#st{last = Seq}};
                        {error, Reason} -> {stop, {error, Reason}}
                    end;
                _ ->
                    case start_replay(St#st{last = Since}) of
                        {ok, St1} -> {ok, St1};
                        {error, Reason} -> {stop, {error, Reason}}
                    end
            end;
        {error, Reason} ->
            {stop, {error, Reason}}
    end.

%% @private
handle_call({?MODULE, stop}, _From, St) ->
    {stop, normal, ok, St};
handle_call(_Req, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
handle_info({barrel_live, Tag, Changes}, #st{tag = Tag} = St) ->
    {noreply, live(Changes, St)};
handle_info({barrel_behind, Tag}, #st{tag = Tag} = St) ->
    %% The engine stopped sending: catch up from the feed (now, or once the
    %% receiver has room).
    case St#st.mode of
        waiting -> {noreply, St};
        _ -> replay_or_stop(St#st{held = [], held_n = 0})
    end;
handle_info(replay, #st{mode = {replay, _, _}} = St) ->
    replay_chunk(St);
handle_info(replay, St) ->
    {noreply, St};
handle_info(retry, #st{mode = waiting} = St) ->
    case has_room(St) of
        true -> replay_or_stop(St);
        false -> erlang:send_after(?RETRY_MS, self(), retry), {noreply, St}
    end;
handle_info({'DOWN', _, process, _, _}, St) ->
    %% The owner or the receiver is gone.
    {stop, normal, St};
handle_info({'EXIT', _, Reason}, St) ->
    {stop, Reason, St};
handle_info(_Msg, St) ->
    {noreply, St}.

%% @private
terminate(_Reason, #st{sub = Sub} = St) ->
    barrel_nif:subscription_cancel(Sub),
    close_cursor(St),
    ok.

%% A feed cursor holds the store open: release it as soon as it is not needed.
close_cursor(#st{mode = {replay, Cursor, _}}) -> barrel_nif:changes_close(Cursor);
close_cursor(_St) -> ok.

%% ---------------------------------------------------------------------------

%% Live changes: passed on in live mode; held while replaying (unacknowledged,
%% so the engine's window bounds them); dropped while waiting for room (the
%% replay that follows reads them from the feed).
live(Changes, #st{mode = live} = St) ->
    ack(length(Changes), pass_on(Changes, St));
live(Changes, #st{mode = {replay, _, _}, held = Held, held_n = N} = St) ->
    St#st{held = lists:reverse(Changes, Held), held_n = N + length(Changes)};
live(_Changes, #st{mode = waiting} = St) ->
    St.

pass_on([], St) ->
    St;
pass_on(_, #st{mode = waiting} = St) ->
    St;
pass_on([#{<<"seq">> := Seq} | Rest], #st{last = Last} = St) when Seq =< Last ->
    pass_on(Rest, St);
pass_on([#{<<"seq">> := Seq} = C | Rest], St) ->
    case has_room(St) of
        true ->
            deliver(C, St),
            pass_on(Rest, St#st{last = Seq});
        false ->
            %% Stop here; the rest comes from the feed once there is room.
            erlang:send_after(?RETRY_MS, self(), retry),
            close_cursor(St),
            St#st{mode = waiting, held = [], held_n = 0}
    end.

deliver(C, #st{target = {to, Pid}}) ->
    Pid ! {barrel_change, self(), C};
deliver(C, #st{target = {callback, Fun}}) ->
    try
        Fun(C)
    catch
        Class:Reason:Stack ->
            logger:error("barrel listener ~p: callback crashed on change ~p: ~p:~p~n~p",
                         [self(), maps:get(<<"seq">>, C), Class, Reason, Stack])
    end.

has_room(#st{target = {callback, _}}) ->
    true;
has_room(#st{target = {to, Pid}, max_queue = Max}) ->
    case erlang:process_info(Pid, message_queue_len) of
        {message_queue_len, N} -> N < Max;
        undefined -> true
    end.

ack(N, #st{unacked = U} = St) when U + N >= ?ACK_EVERY ->
    barrel_nif:subscription_ack(St#st.sub, U + N),
    St#st{unacked = 0};
ack(N, #st{unacked = U} = St) ->
    St#st{unacked = U + N}.

replay_or_stop(St) ->
    case start_replay(St) of
        {ok, St1} -> {noreply, St1};
        {error, Reason} -> {stop, {shutdown, Reason}, St}
    end.

%% Resumes the subscription (changes committed from now on arrive live), then
%% reads the feed after the last sequence passed on.
start_replay(#st{barrel = Barrel, sub = Sub, last = Last} = St) ->
    close_cursor(St),
    barrel_nif:subscription_resume(Sub),
    Flags = {St#st.docs, St#st.all_docs, false},
    case barrel_nif:changes_open(Barrel, Last, Flags, St#st.patterns) of
        {ok, Cursor, UpdateSeq} ->
            self() ! replay,
            {ok, St#st{mode = {replay, Cursor, UpdateSeq}, unacked = 0}};
        {error, _} = Error ->
            Error
    end.

replay_chunk(#st{mode = {replay, Cursor, UpdateSeq}, null = Null} = St) ->
    case barrel_nif:changes_next(Cursor, ?CHUNK, Null) of
        {ok, Changes, Done} ->
            St1 = pass_on(Changes, St),
            case {St1#st.mode, Done} of
                {waiting, _} ->
                    {noreply, St1};
                {_, false} ->
                    self() ! replay,
                    {noreply, St1};
                {_, true} ->
                    %% The feed is read up to UpdateSeq: pass on the held live
                    %% changes after it, and go live.
                    barrel_nif:changes_close(Cursor),
                    Held = lists:reverse(St1#st.held),
                    St2 = St1#st{mode = live, held = [], held_n = 0,
                                 last = max(St1#st.last, UpdateSeq)},
                    {noreply, ack(length(Held), pass_on(Held, St2))}
            end;
        {error, Reason} ->
            {stop, {shutdown, Reason}, St}
    end.
