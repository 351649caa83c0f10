%% @doc Fixtures shared by the EUnit suites: a fresh data directory per suite
%% and the application started on it.
-module(barrel_test_setup).

-export([start/0, stop/1, fresh_barrel/1, tmp_dir/0, rm_dir/1]).

%% @doc Starts `barrel' on a new temporary data directory; returns the directory.
start() ->
    _ = application:stop(barrel),
    Dir = tmp_dir(),
    %% Load first: loading the .app file would override an earlier set_env.
    _ = application:load(barrel),
    ok = application:set_env(barrel, data_dir, Dir),
    {ok, _} = application:ensure_all_started(barrel),
    Dir.

%% @doc Stops the application and removes the directory.
stop(Dir) ->
    ok = application:stop(barrel),
    rm_dir(Dir).

%% @doc Removes a directory tree, retrying while a VM that just stopped may
%% still be closing files in it.
rm_dir(Dir) ->
    rm_dir(Dir, 50).

rm_dir(Dir, Tries) ->
    case file:del_dir_r(Dir) of
        ok -> ok;
        {error, enoent} -> ok;
        {error, _} when Tries > 0 -> timer:sleep(100), rm_dir(Dir, Tries - 1);
        Error -> Error
    end.

%% @doc Creates a barrel with a unique name and opens it.
fresh_barrel(Prefix) ->
    Name = iolist_to_binary([Prefix, "-", integer_to_list(erlang:unique_integer([positive]))]),
    ok = barrel:create_barrel(Name, #{}),
    {ok, Barrel} = barrel:open(Name),
    {Name, Barrel}.

%% @doc A new, empty temporary directory.
tmp_dir() ->
    Base = case os:getenv("TMPDIR") of false -> "/tmp"; T -> T end,
    Dir = filename:join(Base, "barrel-eunit-" ++ integer_to_list(erlang:unique_integer([positive]))
                        ++ "-" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Dir.
