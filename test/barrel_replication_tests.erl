%% @doc Replication between real nodes: this VM's barrels and `barreld'
%% processes on loopback (started by barrel_test_nodes), over the CouchDB
%% protocol (`http://') and Barrel's WebSocket stream (`ws://'). Push, pull
%% and sync end with identical revision trees, conflicts and tombstones
%% included; continuous replications follow concurrent writers on both sides,
%% survive the remote going away, and persistent ones outlive the
%% application; a replication killed mid-way resumes from its checkpoint.
%% Also: progress messages, replication_info, cancel, bad arguments, and the
%% peer-to-peer writes and reads of save_doc/3 and fetch_doc/3. The
%% algorithm against every pair of endpoints is tested in
%% native/barrel_core/tests/replicate.rs.
-module(barrel_replication_tests).
-include_lib("eunit/include/eunit.hrl").

replication_test_() ->
    {setup, fun setup/0, fun cleanup/1,
     fun(Nodes) ->
             %% Each test takes well under a second alone, but waits on real
             %% processes: generous timeouts keep a loaded machine from failing it.
             [{timeout, 60, {Desc, Test}} || {Desc, Test} <- tests(Nodes)]
     end}.

tests(Nodes) ->
    [{"push over http: the target's trees equal the source's", fun() -> push(http, Nodes) end},
     {"push over ws", fun() -> push(ws, Nodes) end},
     {"pull over http into a new local barrel", fun() -> pull(http, Nodes) end},
     {"pull over ws", fun() -> pull(ws, Nodes) end},
     {"sync over http: both sides end equal, concurrent edits in conflict",
      fun() -> sync(http, Nodes) end},
     {"sync over ws", fun() -> sync(ws, Nodes) end},
     {"continuous sync over http with writers on both sides; "
      "a conflict resolved on one side propagates", fun() -> continuous_sync(http, Nodes) end},
     {"continuous sync over ws", fun() -> continuous_sync(ws, Nodes) end},
     {"filter: only matching documents, pushed over http and pulled over ws",
      fun() -> filtered(Nodes) end},
     {"since: only the changes after that sequence", fun() -> since(Nodes) end},
     {"auth: a node requiring a token, over http and ws", fun auth/0},
     {"a replication killed mid-way resumes from its checkpoint", fun resume_after_crash/0},
     {"continuous: the remote killed and restarted, retrying then idle, nothing lost",
      fun continuous_survives_remote_restart/0},
     {"a continuous replication started while the remote is down waits for it",
      fun continuous_starts_while_remote_down/0},
     {"https and wss sides with a private certificate authority (tls_ca)", fun tls_sides/0},
     {"progress messages to `to', then replication_info", fun() -> progress_and_info(Nodes) end},
     {"sync reports both legs", fun() -> sync_legs(Nodes) end},
     {"cancel_replication stops a continuous replication", fun() -> cancel(Nodes) end},
     {"a one-shot replication with a remote that does not answer is refused",
      fun dead_remote_refused/0},
     {"bad specs and options are refused, nothing is started", fun bad_arguments/0},
     {"p2p_write: a chain of two hops", fun() -> p2p_write_chain(Nodes) end},
     {"p2p_write: a dead hop is reported, the local write and the other hops kept",
      fun() -> p2p_write_dead_hop(Nodes) end},
     {"p2p_read: local first, then each hop, skipping dead ones; cache",
      fun() -> p2p_read(Nodes) end},
     {"p2p options: bad hops are refused", fun p2p_bad_options/0},
     {"persist: replications start again with the application", fun() -> persist(Nodes) end},
     {"attachments pushed over http and pulled back over ws; contents sent once",
      fun() -> attachments(Nodes) end},
     {"attachments between local barrels: only missing contents copied",
      fun local_attachments/0},
     {"replication_info keeps the last 100 ended replications", fun ended_are_pruned/0}].

setup() ->
    Dir = barrel_test_setup:start(),
    {ok, Inets} = application:ensure_all_started(inets),
    ok = barrel_test_nodes:build(),
    #{dir => Dir, started => Inets, a => barrel_test_nodes:start(), b => barrel_test_nodes:start()}.

cleanup(#{dir := Dir, started := Started, a := A, b := B}) ->
    ok = barrel_test_nodes:stop(A),
    ok = barrel_test_nodes:stop(B),
    [ok = application:stop(App) || App <- lists:reverse(Started)],
    barrel_test_setup:stop(Dir).

%% ---------------------------------------------------------------------------
%% Helpers: sides, documents, trees
%% ---------------------------------------------------------------------------

%% A side is `{local, Barrel}' or `{remote, Node, Name}'.

%% A new local barrel: its name and its side.
local(Prefix) ->
    {Name, B} = barrel_test_setup:fresh_barrel(Prefix),
    {Name, {local, B}}.

%% A new barrel on a node.
remote(Node, Prefix) ->
    Name = unique(Prefix),
    ?assertMatch({201, _}, barrel_test_nodes:put(Node, ["/barrels/", Name], none)),
    {remote, Node, Name}.

%% A name for a barrel not created yet.
unique(Prefix) ->
    iolist_to_binary([Prefix, "-", integer_to_list(erlang:unique_integer([positive]))]).

%% Where a replication finds a remote side.
endpoint(http, {remote, Node, Name}) -> barrel_test_nodes:url(Node, Name);
endpoint(ws, {remote, Node, Name}) -> barrel_test_nodes:ws_url(Node, Name).

doc_path(Name, Id) -> ["/barrels/", Name, "/docs/", Id].

%% Saves a document as an edit: `{ok, Id, Rev}'.
save({local, B}, Doc) ->
    barrel:save_doc(B, Doc);
save({remote, Node, Name}, #{<<"id">> := Id} = Doc) ->
    case barrel_test_nodes:put(Node, doc_path(Name, Id), Doc) of
        {201, #{<<"rev">> := Rev}} -> {ok, Id, Rev};
        {409, _} -> {error, conflict}
    end.

%% Stores a revision as given, with its history (as replication writes).
save_rev({local, B}, Doc) ->
    barrel:save_doc(B, Doc, #{new_edits => false});
save_rev({remote, Node, Name}, #{<<"id">> := Id} = Doc) ->
    Couch = maps:put(<<"_id">>, Id, maps:remove(<<"id">>, Doc)),
    {201, #{<<"rev">> := Rev}} =
        barrel_test_nodes:put(Node, ["/barrels/", Name, "/", Id, "?new_edits=false"], Couch),
    {ok, Id, Rev}.

delete({local, B}, Id, Rev) ->
    barrel:delete_doc(B, Id, Rev);
delete({remote, Node, Name}, Id, Rev) ->
    {200, #{<<"rev">> := Deleted}} =
        barrel_test_nodes:delete(Node, [doc_path(Name, Id), "?rev=", Rev]),
    {ok, Id, Deleted}.

%% The winning revision, `{error, not_found}' when missing or deleted.
fetch({local, B}, Id) ->
    barrel:fetch_doc(B, Id);
fetch({remote, Node, Name}, Id) ->
    case barrel_test_nodes:get(Node, doc_path(Name, Id)) of
        {200, Doc} -> {ok, Doc};
        {404, _} -> {error, not_found}
    end.

%% A revision made up, as another node would send it: `_rev' with a history
%% of Depth revisions of its own, on top of the revision hashes `ParentIds'
%% (newest first) when given.
branch(Id, Depth, Body) ->
    branch(Id, Depth, Body, []).

branch(Id, Depth, Body, ParentIds) ->
    Own = [hash([Id, Body, integer_to_list(I)]) || I <- lists:seq(Depth, 1, -1)],
    Start = Depth + length(ParentIds),
    Body#{<<"id">> => Id, <<"_rev">> => rev(Start, hd(Own)),
          <<"_revisions">> => #{<<"start">> => Start, <<"ids">> => Own ++ ParentIds}}.

%% A child of `ParentRev' made elsewhere: a conflicting edit.
child(Id, ParentRev, Body) ->
    [_, ParentHash] = binary:split(ParentRev, <<"-">>),
    branch(Id, 1, Body, [ParentHash]).

hash(Term) -> string:lowercase(binary:encode_hex(erlang:md5(term_to_binary(Term)))).
rev(N, Hash) -> iolist_to_binary([integer_to_list(N), "-", Hash]).

%% Documents of every shape replication carries: a plain one with every JSON
%% type, one edited twice, a tombstone, a conflict (a second branch of its own
%% root) and a conflict resolved by deleting a branch. `Tag' prefixes the ids:
%% 5 documents, 7 leaf revisions.
populate(Side, Tag) ->
    Id = fun(S) -> <<Tag/binary, "-", S/binary>> end,
    {ok, _, _} = save(Side, #{<<"id">> => Id(<<"plain">>), <<"n">> => 1, <<"f">> => 1.5,
                              <<"null">> => null, <<"s">> => <<"é \"q\"\n"/utf8>>,
                              <<"l">> => [1, true, false, #{<<"k">> => []}]}),
    {ok, E, E1} = save(Side, #{<<"id">> => Id(<<"edited">>), <<"v">> => 1}),
    {ok, E, E2} = save(Side, #{<<"id">> => E, <<"_rev">> => E1, <<"v">> => 2}),
    {ok, E, _} = save(Side, #{<<"id">> => E, <<"_rev">> => E2, <<"v">> => 3}),
    {ok, D, D1} = save(Side, #{<<"id">> => Id(<<"deleted">>), <<"v">> => 1}),
    {ok, D, _} = delete(Side, D, D1),
    {ok, C, _} = save(Side, #{<<"id">> => Id(<<"conflict">>), <<"v">> => <<"main">>}),
    {ok, C, _} = save_rev(Side, branch(C, 2, #{<<"v">> => <<"branch">>})),
    {ok, R, _} = save(Side, #{<<"id">> => Id(<<"resolved">>), <<"v">> => <<"main">>}),
    {ok, R, Loser} = save_rev(Side, branch(R, 1, #{<<"v">> => <<"loser">>})),
    {ok, R, _} = delete(Side, R, Loser),
    ok.

%% The changes feed with every leaf: `[{Id, [WinnerRev | OtherLeafRevs], Deleted}]'.
feed({local, B}) ->
    {ok, Changes, _} = barrel:changes(B, 0, #{style => all_docs}),
    [{Id, Revs, maps:get(<<"deleted">>, C, false)}
     || #{<<"id">> := Id, <<"changes">> := Revs} = C <- Changes];
feed({remote, Node, Name}) ->
    {200, #{<<"results">> := Results}} =
        barrel_test_nodes:get(Node, ["/barrels/", Name, "/_changes?style=all_docs"]),
    [{Id, [Rev || #{<<"rev">> := Rev} <- Changes], maps:get(<<"deleted">>, C, false)}
     || #{<<"id">> := Id, <<"changes">> := Changes} = C <- Results].

%% Every leaf revision of a document, with its body and its history.
leaves({local, B}, Id) ->
    {ok, Leaves} = barrel:fetch_doc(B, Id, #{open_revs => all, revs => true}),
    lists:sort([Doc || {ok, Doc} <- Leaves]);
leaves({remote, Node, Name}, Id) ->
    {200, Leaves} = barrel_test_nodes:get(Node, [doc_path(Name, Id), "?open_revs=all&revs=true"]),
    lists:sort([Doc || #{<<"ok">> := Doc} <- Leaves]).

%% Each document's winner, leaves and deletion flag, in id order.
summary(Side) ->
    lists:sort([{Id, Winner, lists:sort(Revs), Deleted}
                || {Id, [Winner | _] = Revs, Deleted} <- feed(Side)]).

%% The summary with every leaf's body and history: equal on two sides exactly
%% when their revision trees are (up to the revisions no leaf descends from).
tree(Side) ->
    [{Id, Winner, Revs, Deleted, leaves(Side, Id)} || {Id, Winner, Revs, Deleted} <- summary(Side)].

%% Waits until two sides hold N documents with the same trees.
converge(Side1, Side2, N) ->
    wait_until(fun() ->
                       S = summary(Side1),
                       length(S) =:= N andalso S =:= summary(Side2)
               end, 20000),
    Tree = tree(Side1),
    ?assertEqual(Tree, tree(Side2)),
    Tree.

%% Polls Fun until it returns true; fails after Ms.
wait_until(Fun, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    wait_until(Fun, Deadline, Ms).

wait_until(Fun, Deadline, Ms) ->
    case Fun() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error({timeout, Ms});
                false -> timer:sleep(50), wait_until(Fun, Deadline, Ms)
            end
    end.

%% The info of a replication once Pred holds for it (within 15 s).
wait_info(Id, Pred) ->
    wait_until(fun() -> {ok, Info} = barrel:replication_info(Id), Pred(Info) end, 15000),
    {ok, Info} = barrel:replication_info(Id),
    Info.

state_is(States) ->
    fun(#{state := S}) -> lists:member(S, States) end.

%% The info of a replication once it has ended.
await_end(Id) ->
    wait_info(Id, state_is([completed, failed, cancelled])).

%% The first progress message of Id for which Pred holds (within 15 s).
await_progress(Id, Pred) ->
    receive
        {barrel_replication, Id, Progress} ->
            case Pred(Progress) of
                true -> Progress;
                false -> await_progress(Id, Pred)
            end
    after 15000 ->
        error({no_progress, Id})
    end.

%% Every progress message of Id until its state is one of States.
progress_until(Id, States) ->
    receive
        {barrel_replication, Id, #{state := S} = Progress} ->
            case lists:member(S, States) of
                true -> [Progress];
                false -> [Progress | progress_until(Id, States)]
            end
    after 15000 ->
        error({no_progress, Id})
    end.

%% Runs Fun with continuous replication Id, cancelled afterwards whatever
%% happens.
with_replication({ok, Id}, Fun) ->
    try Fun(Id)
    after barrel:cancel_replication(Id)
    end.

%% A process writing N documents on Side (some updated, some deleted), then
%% sending `{written, self()}'.
writer(Side, Prefix, N) ->
    Parent = self(),
    spawn_link(fun() ->
        [begin
             Id = iolist_to_binary([Prefix, "-", integer_to_list(I)]),
             {ok, Id, Rev1} = save(Side, #{<<"id">> => Id, <<"v">> => 1}),
             {ok, Id, Rev2} = save(Side, #{<<"id">> => Id, <<"_rev">> => Rev1, <<"v">> => 2}),
             I rem 5 =:= 0 andalso delete(Side, Id, Rev2)
         end || I <- lists:seq(1, N)],
        Parent ! {written, self()}
    end).

await_written(Writers) ->
    [receive {written, W} -> ok after 20000 -> error({writer_stuck, W}) end || W <- Writers],
    ok.

%% Saves N small documents `Prefix-I' on a local barrel.
fill(Side, Prefix, N) ->
    fill(Side, Prefix, N, #{}).

%% The same with Extra in each document.
fill({local, B}, Prefix, N, Extra) ->
    Docs = [Extra#{<<"id">> => iolist_to_binary([Prefix, "-", integer_to_list(I)]), <<"i">> => I}
            || I <- lists:seq(1, N)],
    {ok, Results} = barrel:save_docs(B, Docs),
    ?assertEqual([], [R || R <- Results, element(1, R) =/= ok]).

%% ---------------------------------------------------------------------------
%% One-shot: push, pull, sync
%% ---------------------------------------------------------------------------

push(Scheme, #{a := A}) ->
    {Name, Local} = local(<<"push">>),
    populate(Local, <<"l">>),
    %% Not there yet: create_target makes it.
    Remote = {remote, A, unique(<<"push">>)},
    {ok, Id} = barrel:replicate(#{<<"source">> => Name, <<"target">> => endpoint(Scheme, Remote)}),
    ?assertMatch(#{state := completed, docs_read := 5, docs_written := 7, errors := 0},
                 await_end(Id)),
    Tree = tree(Local),
    ?assertEqual(Tree, tree(Remote)),
    ?assertEqual(5, length(Tree)),
    %% Conflicts arrived as conflicts, deletions as tombstones.
    ?assertMatch({ok, #{<<"v">> := 3}}, fetch(Remote, <<"l-edited">>)),
    ?assertEqual({error, not_found}, fetch(Remote, <<"l-deleted">>)),
    ?assertMatch([{<<"l-conflict">>, _, [_, _], false, _}],
                 [T || {<<"l-conflict">>, _, _, _, _} = T <- Tree]),
    ?assertMatch([{<<"l-deleted">>, _, [_], true, [#{<<"_deleted">> := true}]}],
                 [T || {<<"l-deleted">>, _, _, _, _} = T <- Tree]).

attachments(#{a := A}) ->
    {Name, {local, B} = Local} = local(<<"atts">>),
    Photo = crypto:strong_rand_bytes(300000),
    {ok, Id, R1} = barrel:save_doc(B, #{<<"id">> => <<"p">>, <<"_attachments">> =>
                                           #{<<"photo.jpg">> => #{<<"content_type">> => <<"image/jpeg">>,
                                                                  <<"data">> => Photo}}}),
    Remote = {remote, A, unique(<<"atts">>)},
    Push = fun() ->
                   {ok, Rep} = barrel:replicate(#{<<"source">> => Name,
                                                  <<"target">> => endpoint(http, Remote)}),
                   await_end(Rep)
           end,
    ?assertMatch(#{state := completed, attachments_copied := 1, attachment_bytes := 300000},
                 Push()),
    {200, #{<<"_attachments">> := #{<<"photo.jpg">> := #{<<"data">> := B64}}}} =
        barrel_test_nodes:get(A, [doc_path(element(3, Remote), Id), "?attachments=true"]),
    ?assertEqual(Photo, base64:decode(B64)),
    %% An edit that keeps the attachment: the revision goes, the content does not.
    {ok, Doc} = barrel:fetch_doc(B, Id),
    {ok, Id, _} = barrel:save_doc(B, Doc#{<<"v">> => 2}),
    ?assertMatch(#{state := completed, docs_written := 1, attachments_copied := 0}, Push()),
    %% Pulled back over ws into a new barrel: same trees, same content.
    Copy = unique(<<"atts-copy">>),
    {ok, Pull} = barrel:replicate(#{<<"source">> => endpoint(ws, Remote), <<"target">> => Copy}),
    ?assertMatch(#{state := completed, attachments_copied := 1}, await_end(Pull)),
    {ok, C} = barrel:open(Copy),
    ?assertEqual({ok, Photo}, barrel:fetch_attachment(C, Id, <<"photo.jpg">>)),
    ?assertEqual(tree(Local), tree({local, C})),
    _ = R1.

ended_are_pruned() ->
    {Name, _} = local(<<"prune">>),
    %% A replication's id comes from its sides: one target each.
    Ids = [begin
               Target = unique(<<"prune-copy">>),
               {ok, Id} = barrel:replicate(#{<<"source">> => Name, <<"target">> => Target},
                                           #{to => self()}),
               _ = await_progress(Id, fun(#{state := S}) -> S =:= completed end),
               Id
           end || _ <- lists:seq(1, 105)],
    {Old, Recent} = lists:split(5, Ids),
    %% Forgotten when the later ones end (each prunes as its process stops).
    wait_until(fun() -> barrel:replication_info(lists:last(Old)) =:= {error, not_found} end,
               15000),
    [?assertEqual({error, not_found}, barrel:replication_info(Id)) || Id <- Old],
    [?assertMatch({ok, #{state := completed}}, barrel:replication_info(Id)) || Id <- Recent].

local_attachments() ->
    {Name, {local, B}} = local(<<"latts">>),
    Data = crypto:strong_rand_bytes(5000),
    Att = #{<<"f">> => #{<<"data">> => Data}},
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_attachments">> => Att}),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"b">>, <<"_attachments">> => Att}),
    Target = unique(<<"latts-copy">>),
    {ok, Rep} = barrel:replicate(#{<<"source">> => Name, <<"target">> => Target}),
    %% Two documents, one content.
    ?assertMatch(#{state := completed, docs_written := 2, attachments_copied := 1,
                   attachment_bytes := 5000}, await_end(Rep)),
    {ok, T} = barrel:open(Target),
    ?assertEqual({ok, Data}, barrel:fetch_attachment(T, <<"b">>, <<"f">>)).

pull(Scheme, #{a := A}) ->
    Remote = remote(A, <<"pull">>),
    populate(Remote, <<"r">>),
    %% A local target that does not exist yet is created.
    Name = unique(<<"pull">>),
    {ok, Id} = barrel:replicate(#{<<"source">> => endpoint(Scheme, Remote), <<"target">> => Name}),
    ?assertMatch(#{state := completed, docs_read := 5, docs_written := 7}, await_end(Id)),
    {ok, B} = barrel:open(Name),
    Tree = tree(Remote),
    ?assertEqual(Tree, tree({local, B})),
    ?assertEqual(5, length(Tree)).

sync(Scheme, #{a := A}) ->
    {Name, Local} = local(<<"sync">>),
    Remote = remote(A, <<"sync">>),
    populate(Local, <<"l">>),
    populate(Remote, <<"r">>),
    %% The same document created on both sides: a conflict once synced.
    {ok, _, LocalRev} = save(Local, #{<<"id">> => <<"both">>, <<"side">> => <<"local">>}),
    {ok, _, RemoteRev} = save(Remote, #{<<"id">> => <<"both">>, <<"side">> => <<"remote">>}),
    {ok, Id} = barrel:replicate(#{<<"source">> => Name, <<"target">> => endpoint(Scheme, Remote)},
                                #{sync => true}),
    ?assertMatch(#{state := completed,
                   legs := #{push := #{state := completed, docs_written := 8},
                             pull := #{state := completed, docs_written := 8}}},
                 await_end(Id)),
    Tree = tree(Local),
    ?assertEqual(Tree, tree(Remote)),
    ?assertEqual(11, length(Tree)),
    [{<<"both">>, _, Both, false, _}] = [T || {<<"both">>, _, _, _, _} = T <- Tree],
    ?assertEqual(lists:sort([LocalRev, RemoteRev]), Both).

%% ---------------------------------------------------------------------------
%% Continuous
%% ---------------------------------------------------------------------------

continuous_sync(Scheme, #{a := A}) ->
    {Name, Local} = local(<<"cont">>),
    {remote, _, RemoteName} = Remote = remote(A, <<"cont">>),
    Spec = #{<<"source">> => Name, <<"target">> => endpoint(Scheme, Remote)},
    with_replication(barrel:replicate(Spec, #{continuous => true, sync => true}), fun(Id) ->
        {ok, Shared, Rev1} = save(Local, #{<<"id">> => <<"shared">>, <<"v">> => 0}),
        wait_until(fun() -> fetch(Remote, Shared) =:= fetch(Local, Shared) end, 10000),
        Writers = [writer(Local, <<"l1">>, 30), writer(Local, <<"l2">>, 30),
                   writer(Remote, <<"r1">>, 30)],
        %% Revision 1 edited on both sides at once: a conflict.
        {ok, _, LocalRev} = save(Local, #{<<"id">> => Shared, <<"_rev">> => Rev1,
                                          <<"v">> => <<"local">>}),
        {ok, _, RemoteRev} = save_rev(Remote, child(Shared, Rev1, #{<<"v">> => <<"remote">>})),
        ok = await_written(Writers),
        Tree = converge(Local, Remote, 91),
        [{_, Winner, Leaves, false, _}] = [T || {<<"shared">>, _, _, _, _} = T <- Tree],
        ?assertEqual(lists:sort([LocalRev, RemoteRev]), Leaves),
        %% Resolved on the local side by deleting the losing branch.
        [Loser] = Leaves -- [Winner],
        {ok, _, _} = delete(Local, Shared, Loser),
        wait_until(fun() -> summary(Local) =:= summary(Remote) end, 10000),
        ?assertEqual(tree(Local), tree(Remote)),
        {200, Doc} = barrel_test_nodes:get(A, [doc_path(RemoteName, Shared), "?conflicts=true"]),
        ?assertEqual(Winner, maps:get(<<"_rev">>, Doc)),
        ?assertNot(maps:is_key(<<"_conflicts">>, Doc)),
        ?assertMatch(#{state := idle, errors := 0}, wait_info(Id, state_is([idle])))
    end).

continuous_survives_remote_restart() ->
    barrel_test_nodes:with_nodes(1, fun([Node]) ->
        {Name, Local} = local(<<"outage">>),
        Remote = remote(Node, <<"outage">>),
        Spec = #{<<"source">> => Name, <<"target">> => endpoint(http, Remote)},
        with_replication(barrel:replicate(Spec, #{continuous => true, sync => true}), fun(Id) ->
            fill(Local, <<"before">>, 10),
            converge(Local, Remote, 10),
            wait_info(Id, state_is([idle])),
            ok = barrel_test_nodes:kill(Node),
            fill(Local, <<"during">>, 10),
            #{last_error := Error} = wait_info(Id, state_is([retrying])),
            ?assert(is_binary(Error)),
            ok = barrel_test_nodes:restart(Node),
            {ok, _, _} = save(Remote, #{<<"id">> => <<"after">>}),
            converge(Local, Remote, 21),
            ?assertMatch(#{state := idle, errors := N} when N > 0,
                         wait_info(Id, state_is([idle])))
        end)
    end).

continuous_starts_while_remote_down() ->
    barrel_test_nodes:with_nodes(1, fun([Node]) ->
        ok = barrel_test_nodes:kill(Node),
        {Name, Local} = local(<<"down">>),
        Remote = {remote, Node, unique(<<"down">>)},
        fill(Local, <<"d">>, 5),
        Spec = #{<<"source">> => Name, <<"target">> => endpoint(http, Remote)},
        %% Accepted (a one-shot one would be refused): it retries until the node is up,
        %% then creates the target barrel and catches up.
        with_replication(barrel:replicate(Spec, #{continuous => true}), fun(Id) ->
            wait_info(Id, state_is([retrying])),
            ok = barrel_test_nodes:restart(Node),
            %% Idle: a pass went through, so the target exists; then it has everything.
            wait_info(Id, state_is([idle])),
            converge(Local, Remote, 5)
        end)
    end).

tls_sides() ->
    Dir = barrel_test_setup:tmp_dir(),
    Script = "cd '" ++ Dir ++ "' && "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
        "-subj /CN=barrel-test-ca 2>/dev/null && "
        "openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost "
        "2>/dev/null && "
        "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && "
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem "
        "-days 1 -extfile ext.cnf 2>/dev/null && echo done",
    ?assertMatch("done" ++ _, os:cmd(Script)),
    Ca = filename:join(Dir, "ca.pem"),
    {ok, Http} = barrel:start_http(#{port => 0, tls => {filename:join(Dir, "srv.pem"),
                                                        filename:join(Dir, "srv.key")}}),
    try
        {ok, #{port := Port}} = barrel:http_info(Http),
        Host = <<"127.0.0.1:", (integer_to_binary(Port))/binary>>,
        {Name, Local} = local(<<"tls">>),
        fill(Local, <<"t">>, 5),
        Https = <<"https://", Host/binary, "/barrels/", (unique(<<"https">>))/binary>>,
        Wss = <<"wss://", Host/binary, "/", (unique(<<"wss">>))/binary>>,
        [begin
             {ok, Id} = barrel:replicate(#{<<"source">> => Name, <<"target">> => Target},
                                         #{tls_ca => Ca}),
             ?assertMatch(#{state := completed, docs_written := 5}, await_end(Id))
         end || Target <- [Https, Wss]],
        %% The public roots do not know this CA: refused at once.
        ?assertMatch({error, {storage_error, _}},
                     barrel:replicate(#{<<"source">> => Name, <<"target">> => Https}, #{})),
        ?assertMatch({error, {bad_param, _}},
                     barrel:replicate(#{<<"source">> => Name, <<"target">> => Https},
                                      #{tls_ca => filename:join(Dir, "missing.pem")}))
    after
        barrel:stop_http(Http),
        barrel_test_setup:rm_dir(Dir)
    end.

%% ---------------------------------------------------------------------------
%% Filter, since, auth
%% ---------------------------------------------------------------------------

filtered(#{a := A}) ->
    Docs = [#{<<"id">> => <<"a1">>, <<"type">> => <<"a">>},
            #{<<"id">> => <<"a2">>, <<"type">> => <<"a">>, <<"n">> => 2},
            #{<<"id">> => <<"b1">>, <<"type">> => <<"b">>},
            #{<<"id">> => <<"none">>},
            #{<<"id">> => <<"nested">>, <<"x">> => #{<<"type">> => <<"a">>}}],
    Only = fun(Ids, Tree) -> [T || {Id, _, _, _, _} = T <- Tree, lists:member(Id, Ids)] end,
    %% Pushed over http.
    {Name, Local} = local(<<"filter">>),
    [{ok, _, _} = save(Local, D) || D <- Docs],
    Pushed = {remote, A, unique(<<"filter">>)},
    {ok, Push} = barrel:replicate(#{<<"source">> => Name, <<"target">> => endpoint(http, Pushed)},
                                  #{filter => [<<"/type/a">>]}),
    ?assertMatch(#{state := completed, docs_written := 2}, await_end(Push)),
    ?assertEqual(Only([<<"a1">>, <<"a2">>], tree(Local)), tree(Pushed)),
    %% Pulled over ws.
    Remote = remote(A, <<"filter">>),
    [{ok, _, _} = save(Remote, D) || D <- Docs],
    Pulled = unique(<<"filter">>),
    {ok, Pull} = barrel:replicate(#{<<"source">> => endpoint(ws, Remote), <<"target">> => Pulled},
                                  #{filter => [<<"/type/a">>]}),
    ?assertMatch(#{state := completed, docs_written := 2}, await_end(Pull)),
    {ok, B} = barrel:open(Pulled),
    ?assertEqual(Only([<<"a1">>, <<"a2">>], tree(Remote)), tree({local, B})).

since(#{a := A}) ->
    {Name, Local} = local(<<"since">>),
    fill(Local, <<"d">>, 10),
    Remote = {remote, A, unique(<<"since">>)},
    {ok, Id} = barrel:replicate(#{<<"source">> => Name, <<"target">> => endpoint(http, Remote)},
                                #{since => 6}),
    ?assertMatch(#{state := completed, docs_read := 4, docs_written := 4}, await_end(Id)),
    ?assertEqual([<<"d-10">>, <<"d-7">>, <<"d-8">>, <<"d-9">>],
                 [Doc || {Doc, _, _, _} <- summary(Remote)]).

auth() ->
    Node = barrel_test_nodes:start(#{tokens => ["s3cret"]}),
    try
        {Name, Local} = local(<<"auth">>),
        populate(Local, <<"l">>),
        Remote = {remote, Node, unique(<<"auth">>)},
        Spec = #{<<"source">> => Name, <<"target">> => endpoint(http, Remote)},
        %% Without credentials the target cannot even be created.
        ?assertMatch({error, {storage_error, _}}, barrel:replicate(Spec)),
        {ok, Id} = barrel:replicate(Spec, #{auth => {bearer, <<"s3cret">>}}),
        ?assertMatch(#{state := completed, docs_written := 7}, await_end(Id)),
        ?assertEqual(tree(Local), tree(Remote)),
        %% Over ws too, and pulling.
        Ws = {remote, Node, unique(<<"auth">>)},
        WsSpec = #{<<"source">> => Name, <<"target">> => endpoint(ws, Ws)},
        ?assertMatch({error, {storage_error, _}}, barrel:replicate(WsSpec)),
        {ok, WsId} = barrel:replicate(WsSpec, #{auth => {bearer, <<"s3cret">>}}),
        ?assertMatch(#{state := completed, docs_written := 7}, await_end(WsId)),
        Back = unique(<<"auth">>),
        {ok, BackId} = barrel:replicate(#{<<"source">> => endpoint(ws, Ws), <<"target">> => Back},
                                        #{auth => {bearer, <<"s3cret">>}}),
        ?assertMatch(#{state := completed, docs_written := 7}, await_end(BackId)),
        {ok, BackB} = barrel:open(Back),
        ?assertEqual(tree(Local), tree({local, BackB}))
    after
        barrel_test_nodes:stop(Node)
    end.

%% ---------------------------------------------------------------------------
%% Resuming
%% ---------------------------------------------------------------------------

resume_after_crash() ->
    barrel_test_nodes:with_nodes(1, fun([Node]) ->
        {Name, Local} = local(<<"resume">>),
        %% 4 KB each: 30 batches take long enough (some 200 ms on loopback)
        %% for the kill after the fifth one to land well before the end.
        fill(Local, <<"d">>, 3000, #{<<"pad">> => binary:copy(<<"x">>, 4000)}),
        RemoteName = unique(<<"resume">>),
        Remote = {remote, Node, RemoteName},
        Spec = #{<<"source">> => Name, <<"target">> => endpoint(http, Remote)},
        Opts = #{batch_size => 100, to => self()},
        {ok, First} = barrel:replicate(Spec, Opts),
        await_progress(First, fun(#{docs_written := W}) -> W >= 500 end),
        ok = barrel_test_nodes:kill(Node),
        %% The last sequence both sides confirmed (the checkpoint).
        #{state := failed, last_seq := Confirmed} =
            await_progress(First, state_is([failed, completed])),
        ?assertMatch(#{state := failed, last_error := E} when is_binary(E), await_end(First)),
        ?assert(Confirmed >= 500 andalso Confirmed < 3000),
        ok = barrel_test_nodes:restart(Node),
        %% What the target confirmed survived kill -9; at most one batch more arrived.
        {200, #{<<"doc_count">> := Kept}} =
            barrel_test_nodes:get(Node, ["/barrels/", RemoteName]),
        ?assert(Kept >= Confirmed andalso Kept =< Confirmed + 100),
        {ok, Second} = barrel:replicate(Spec, Opts),
        #{state := completed, docs_read := Read, docs_written := Written} = await_end(Second),
        %% Resumed from the checkpoint, not from 0; what the target already had
        %% is read again (at most the unconfirmed batch) but not written.
        ?assert(Read =< 3000 - Confirmed),
        ?assertEqual(3000 - Kept, Written),
        ?assert(Read - Written =< 100),
        ?assertEqual(3000, length(summary(Remote))),
        ?assertEqual(summary(Local), summary(Remote))
    end).

%% ---------------------------------------------------------------------------
%% Progress, info, cancel, errors
%% ---------------------------------------------------------------------------

progress_and_info(#{a := A}) ->
    {Name, Local} = local(<<"progress">>),
    fill(Local, <<"d">>, 25),
    Target = endpoint(http, {remote, A, unique(<<"progress">>)}),
    Spec = #{<<"source">> => Name, <<"target">> => Target},
    {ok, Id} = barrel:replicate(Spec, #{batch_size => 10, to => self()}),
    Messages = progress_until(Id, [completed, failed]),
    ?assertMatch([#{state := running, leg := push} | _], Messages),
    ?assertMatch(#{state := completed, docs_read := 25, docs_written := 25, last_seq := 25,
                   errors := 0, last_error := undefined, leg := push},
                 lists:last(Messages)),
    %% One message per batch at least, the counters only growing.
    Written = [W || #{docs_written := W} <- Messages],
    ?assertEqual(Written, lists:sort(Written)),
    ?assertEqual([10, 20, 25], [W || W <- [10, 20, 25], lists:member(W, Written)]),
    receive {barrel_replication, Id, Late} -> error({after_completed, Late})
    after 200 -> ok
    end,
    {ok, Info} = barrel:replication_info(Id),
    ?assertEqual(#{id => Id, state => completed, source => Name, target => Target,
                   continuous => false, sync => false, docs_read => 25, docs_written => 25,
                   attachments_copied => 0, attachment_bytes => 0,
                   last_seq => 25, errors => 0, last_error => undefined},
                 maps:remove(legs, Info)),
    ?assertMatch(#{legs := #{push := #{state := completed, last_seq := 25}}}, Info),
    ?assertEqual([push], maps:keys(maps:get(legs, Info))),
    %% The same replication again starts from its checkpoint: nothing to do.
    {ok, Again} = barrel:replicate(Spec),
    ?assertMatch(#{state := completed, docs_read := 0, docs_written := 0}, await_end(Again)).

sync_legs(#{a := A}) ->
    {Name, Local} = local(<<"legs">>),
    fill(Local, <<"l">>, 3),
    Remote = remote(A, <<"legs">>),
    {ok, _, _} = save(Remote, #{<<"id">> => <<"r">>}),
    {ok, Id} = barrel:replicate(#{<<"source">> => Name, <<"target">> => endpoint(http, Remote)},
                                #{sync => true, to => self()}),
    ?assertMatch(#{push := #{state := completed, docs_written := 3},
                   pull := #{state := completed, docs_written := 1}},
                 last_of_each_leg(Id, #{})),
    ?assertMatch(#{state := completed, sync := true, docs_written := 4,
                   legs := #{push := #{docs_written := 3}, pull := #{docs_written := 1}}},
                 await_end(Id)).

%% The last progress message of each leg, once both have completed.
last_of_each_leg(Id, Acc) ->
    case maps:size(Acc) =:= 2 andalso
        lists:all(fun(#{state := S}) -> S =:= completed end, maps:values(Acc)) of
        true -> Acc;
        false ->
            #{leg := Leg} = P = await_progress(Id, fun(_) -> true end),
            last_of_each_leg(Id, Acc#{Leg => P})
    end.

cancel(#{a := A}) ->
    {Name, Local} = local(<<"cancel">>),
    Remote = {remote, A, unique(<<"cancel">>)},
    {ok, Id} = barrel:replicate(#{<<"source">> => Name, <<"target">> => endpoint(http, Remote)},
                                #{continuous => true, to => self()}),
    await_progress(Id, state_is([idle])),
    ?assertEqual(ok, barrel:cancel_replication(Id)),
    ?assertMatch({ok, #{state := cancelled, continuous := true}}, barrel:replication_info(Id)),
    ?assertMatch(#{state := cancelled, leg := push}, await_progress(Id, state_is([cancelled]))),
    {ok, _, _} = save(Local, #{<<"id">> => <<"late">>}),
    timer:sleep(300),
    ?assertEqual({error, not_found}, fetch(Remote, <<"late">>)),
    %% Cancelling a stopped replication again is harmless; unknown ids are not found.
    ?assertEqual(ok, barrel:cancel_replication(Id)),
    ?assertEqual({error, not_found}, barrel:cancel_replication(<<"rep-unknown">>)),
    ?assertEqual({error, not_found}, barrel:replication_info(<<"rep-unknown">>)).

dead_remote_refused() ->
    Node = barrel_test_nodes:start(),
    ok = barrel_test_nodes:stop(Node),
    {Name, _} = local(<<"dead">>),
    Before = supervisor:which_children(barrel_replicator_sup),
    [?assertMatch({error, {storage_error, _}}, barrel:replicate(Spec, Opts))
     || Scheme <- [http, ws],
        Remote <- [endpoint(Scheme, {remote, Node, <<"gone">>})],
        Spec <- [#{<<"source">> => Name, <<"target">> => Remote},
                 #{<<"source">> => Remote, <<"target">> => Name}],
        Opts <- [#{}, #{create_target => false}]],
    ?assertEqual([], supervisor:which_children(barrel_replicator_sup) -- Before).

bad_arguments() ->
    {Name, _} = local(<<"bad">>),
    Spec = #{<<"source">> => Name, <<"target">> => unique(<<"bad">>)},
    Before = supervisor:which_children(barrel_replicator_sup),
    Bad = [{continuous, yes}, {sync, 1}, {filter, [type]}, {filter, type},
           {since, -1}, {since, now}, {batch_size, 0}, {batch_size, 100001}, {batch_size, 1.5},
           {to, some_name}, {persist, maybe}, {create_target, 1}, {auth, {basic, "u", "p"}},
           {auth, {token, <<"t">>}}, {auth, <<"Bearer t">>}, {bogus, 1}],
    [?assertEqual({error, {bad_option, {K, V}}}, barrel:replicate(Spec, #{K => V}))
     || {K, V} <- Bad],
    ?assertEqual({error, {bad_option, [{continuous, true}]}},
                 barrel:replicate(Spec, [{continuous, true}])),
    ?assertEqual({error, {bad_arg, not_a_map}}, barrel:replicate(not_a_map)),
    ?assertEqual({error, {bad_endpoint, undefined}}, barrel:replicate(#{<<"source">> => Name})),
    ?assertEqual({error, {bad_endpoint, undefined}}, barrel:replicate(#{<<"target">> => Name})),
    ?assertEqual({error, {bad_endpoint, 42}},
                 barrel:replicate(#{<<"source">> => 42, <<"target">> => Name})),
    ?assertEqual({error, {bad_endpoint, <<>>}},
                 barrel:replicate(#{<<"source">> => Name, <<"target">> => <<>>})),
    ?assertEqual({error, {bad_pattern, <<"type/a">>}},
                 barrel:replicate(Spec, #{filter => [<<"/type/a">>, <<"type/a">>]})),
    %% Missing barrels: the source, or a target not to be created.
    ?assertEqual({error, not_found},
                 barrel:replicate(#{<<"source">> => unique(<<"none">>), <<"target">> => Name})),
    ?assertEqual({error, not_found}, barrel:replicate(Spec, #{create_target => false})),
    ?assertEqual([], supervisor:which_children(barrel_replicator_sup) -- Before).

%% ---------------------------------------------------------------------------
%% Peer-to-peer writes and reads
%% ---------------------------------------------------------------------------

%% A p2p_write or p2p_read hop to a remote side.
hop({remote, Node, Name}) ->
    #{host => barrel_test_nodes:host(Node), name => Name}.

p2p_write_chain(#{a := A, b := B}) ->
    {_, {local, Barrel} = Local} = local(<<"p2p">>),
    OnA = {remote, A, unique(<<"p2p">>)},
    OnB = {remote, B, unique(<<"p2p">>)},
    Chain = (hop(OnA))#{p2p_write => hop(OnB)},
    {ok, Id, Rev1} = barrel:save_doc(Barrel, #{<<"id">> => <<"p">>, <<"v">> => 1},
                                     #{p2p_write => Chain}),
    ?assertEqual(tree(Local), tree(OnA)),
    ?assertEqual(tree(Local), tree(OnB)),
    %% An update carries its history to both hops.
    {ok, Id, Rev2} = barrel:save_doc(Barrel, #{<<"id">> => Id, <<"_rev">> => Rev1, <<"v">> => 2},
                                     #{p2p_write => Chain}),
    ?assertMatch({ok, #{<<"_rev">> := Rev2, <<"v">> := 2}}, fetch(OnB, Id)),
    Tree = tree(Local),
    ?assertEqual(Tree, tree(OnA)),
    ?assertEqual(Tree, tree(OnB)),
    ?assertMatch([{_, Rev2, [Rev2], false, [#{<<"_revisions">> := #{<<"start">> := 2}}]}], Tree).

p2p_write_dead_hop(#{a := A, b := B}) ->
    barrel_test_nodes:with_nodes(1, fun([Dead]) ->
        ok = barrel_test_nodes:kill(Dead),
        {_, {local, Barrel} = Local} = local(<<"p2pdead">>),
        OnA = {remote, A, unique(<<"p2p">>)},
        OnB = {remote, B, unique(<<"p2p">>)},
        Chain = (hop(OnA))#{p2p_write => (hop({remote, Dead, <<"gone">>}))#{p2p_write => hop(OnB)}},
        DeadHost = barrel_test_nodes:host(Dead),
        Result = barrel:save_doc(Barrel, #{<<"id">> => <<"p">>}, #{p2p_write => Chain}),
        ?assertMatch({error, {p2p_write_failed, <<"p">>, _, [{DeadHost, _}]}}, Result),
        {error, {p2p_write_failed, _, Rev, _}} = Result,
        ?assertMatch({ok, #{<<"_rev">> := Rev}}, fetch(Local, <<"p">>)),
        ?assertMatch({ok, #{<<"_rev">> := Rev}}, fetch(OnA, <<"p">>)),
        ?assertMatch({ok, #{<<"_rev">> := Rev}}, fetch(OnB, <<"p">>))
    end).

p2p_read(#{a := A, b := B}) ->
    barrel_test_nodes:with_nodes(1, fun([Dead]) ->
        ok = barrel_test_nodes:kill(Dead),
        {_, {local, Barrel} = Local} = local(<<"p2pread">>),
        {remote, _, NameA} = OnA = remote(A, <<"p2pread">>),
        OnB = remote(B, <<"p2pread">>),
        {ok, _, R1} = save(OnB, #{<<"id">> => <<"far">>, <<"v">> => 1}),
        {ok, _, R2} = save(OnB, #{<<"id">> => <<"far">>, <<"_rev">> => R1, <<"v">> => 2}),
        {ok, _, _} = save(OnB, #{<<"id">> => <<"both">>, <<"side">> => <<"remote">>}),
        {ok, _, Here} = save(Local, #{<<"id">> => <<"both">>, <<"side">> => <<"local">>}),
        %% A dead hop, a hop without the document, then one that has it.
        Chain = (hop({remote, Dead, NameA}))#{p2p_read => (hop(OnA))#{p2p_read => hop(OnB)}},
        Far = #{<<"id">> => <<"far">>, <<"_rev">> => R2, <<"v">> => 2},
        ?assertEqual({ok, Far}, barrel:fetch_doc(Barrel, <<"far">>, #{p2p_read => Chain})),
        ?assertEqual({error, not_found}, fetch(Local, <<"far">>)),
        %% Found here first.
        ?assertEqual({ok, #{<<"id">> => <<"both">>, <<"_rev">> => Here, <<"side">> => <<"local">>}},
                     barrel:fetch_doc(Barrel, <<"both">>, #{p2p_read => Chain})),
        ?assertEqual({error, not_found},
                     barrel:fetch_doc(Barrel, <<"nowhere">>, #{p2p_read => Chain})),
        %% cache => true stores the same revision, with its history.
        ?assertEqual({ok, Far},
                     barrel:fetch_doc(Barrel, <<"far">>, #{p2p_read => Chain, cache => true})),
        ?assertEqual({ok, Far}, fetch(Local, <<"far">>)),
        ?assertEqual(leaves(OnB, <<"far">>), leaves(Local, <<"far">>))
    end).

p2p_bad_options() ->
    {_, {local, B}} = local(<<"p2pbad">>),
    %% Each hop, and the hop the error names: a bad hop in a chain is named itself.
    NoName = #{host => "127.0.0.1:1"},
    Bad = fun(Key) ->
                  [{NoName, NoName}, {#{name => <<"n">>}, #{name => <<"n">>}},
                   {#{host => h, name => <<"n">>}, #{host => h, name => <<"n">>}},
                   {#{host => "127.0.0.1:1", name => "n"}, #{host => "127.0.0.1:1", name => "n"}},
                   {not_a_map, not_a_map},
                   {#{host => "127.0.0.1:1", name => <<"n">>, Key => NoName}, NoName}]
          end,
    [?assertEqual({error, {bad_option, {p2p_write, Named}}},
                  barrel:save_doc(B, #{<<"id">> => <<"x">>}, #{p2p_write => Hop}))
     || {Hop, Named} <- Bad(p2p_write)],
    %% Refused before anything is written.
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"x">>)),
    [?assertEqual({error, {bad_option, {p2p_read, Named}}},
                  barrel:fetch_doc(B, <<"x">>, #{p2p_read => Hop}))
     || {Hop, Named} <- Bad(p2p_read)],
    ?assertEqual({error, {bad_option, {cache, yes}}},
                 barrel:fetch_doc(B, <<"x">>, #{p2p_read => NoName#{name => <<"n">>},
                                               cache => yes})).

%% ---------------------------------------------------------------------------
%% Persistence
%% ---------------------------------------------------------------------------

persist(#{a := A}) ->
    {Name, _} = local(<<"persist">>),
    Pushed = {remote, A, unique(<<"persist">>)},
    Pulled = remote(A, <<"persist">>),
    PulledInto = unique(<<"persist">>),
    {ok, _, _} = save(Pulled, #{<<"id">> => <<"first">>}),
    {ok, Follow} = barrel:replicate(#{<<"source">> => Name,
                                      <<"target">> => endpoint(http, Pushed)},
                                    #{continuous => true, persist => true}),
    {ok, Once} = barrel:replicate(#{<<"source">> => endpoint(http, Pulled),
                                    <<"target">> => PulledInto},
                                  #{persist => true}),
    {ok, Transient} = barrel:replicate(#{<<"source">> => Name, <<"target">> => unique(<<"t">>)},
                                       #{continuous => true}),
    wait_info(Follow, state_is([idle])),
    ?assertMatch(#{state := completed, docs_written := 1}, await_end(Once)),
    %% Written on the remote while this node is down: the one-shot
    %% replication runs again at start and brings it.
    ok = application:stop(barrel),
    {ok, _, _} = save(Pulled, #{<<"id">> => <<"while-down">>}),
    {ok, _} = application:ensure_all_started(barrel),
    ?assertEqual({error, not_found}, barrel:replication_info(Transient)),
    ?assertMatch(#{state := completed, docs_written := 1}, await_end(Once)),
    {ok, Into} = barrel:open(PulledInto),
    ?assertEqual(summary(Pulled), summary({local, Into})),
    %% The continuous one follows again.
    ?assertMatch(#{continuous := true}, wait_info(Follow, state_is([idle]))),
    {ok, B} = barrel:open(Name),
    {ok, _, Rev} = barrel:save_doc(B, #{<<"id">> => <<"after-restart">>}),
    wait_until(fun() -> fetch(Pushed, <<"after-restart">>) =/= {error, not_found} end, 10000),
    ?assertMatch({ok, #{<<"_rev">> := Rev}}, fetch(Pushed, <<"after-restart">>)),
    %% Cancelled, they are forgotten: not started with the next start.
    ok = barrel:cancel_replication(Follow),
    ok = barrel:cancel_replication(Once),
    ok = application:stop(barrel),
    {ok, _} = application:ensure_all_started(barrel),
    ?assertEqual({error, not_found}, barrel:replication_info(Follow)),
    ?assertEqual({error, not_found}, barrel:replication_info(Once)).
