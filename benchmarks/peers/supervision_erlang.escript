#!/usr/bin/env escript
%%! +S 2 -noshell
%% The Erlang/OTP peer of the regency supervision suite.
%%
%% Run by benchmarks/supervision.py with two schedulers (+S 2). Line protocol on
%% stdin/stdout: each request "<case> <n>" runs once and is answered with its raw
%% figures, "ok <f1> <f2> ..." (per-restart latencies in microseconds, or one storm's
%% milliseconds), or "error <text>".
%%
%% This module is both a real OTP supervisor callback module (init({sup, ...})) and the
%% gen_server of its children (init(worker)): one module, as an escript holds one.
%% Child I is registered as bench_cI and crashes itself on the cast `crash`
%% (erlang:error(crash)); "replacement answering" is the first gen_server:call to the
%% name that gets a reply, retried after one erlang:yield() while it fails (the old
%% child died, or the name is between lives): the same job regency and triotp do.
%% Crash reports are filtered out (logger level none), as regency's and triotp's are
%% in the same run, so that no peer pays for printing them.
-module(supervision_erlang).
-mode(compile).
-behaviour(supervisor).
-export([main/1, init/1, handle_call/3, handle_cast/2, start_worker/1]).

-define(INTENSITY, 1000000000).
-define(PERIOD, 1).

main(_) ->
    logger:set_primary_config(level, none),
    loop().

loop() ->
    case io:get_line("") of
        eof -> ok;
        {error, _} -> ok;
        Line ->
            case string:lexemes(string:trim(Line), " ") of
                [] -> ok;
                [Case, N] -> answer(Case, list_to_integer(N));
                _ -> io:format("error bad request~n")
            end,
            loop()
    end.

answer(Case, N) ->
    try run(Case, N) of
        Figures ->
            Text = [[" ", float_to_list(float(F), [{decimals, 3}])] || F <- Figures],
            io:format("ok~s~n", [lists:flatten(Text)])
    catch
        Class:Reason -> io:format("error ~p:~p~n", [Class, Reason])
    end.

now_ns() -> erlang:monotonic_time(nanosecond).

%% "<strategy>:<children>:<crash index>" cases measure N restarts of one child.
run("restart_latency", N) -> latencies(one_for_one, 1, 0, N);
run("rest_for_one_restart", N) -> latencies(rest_for_one, 4, 1, N);
run("storm", N) -> [storm(N)];
run(Case, _) -> error({unknown_case, Case}).

start_sup(Strategy, Children) ->
    {ok, Sup} = supervisor:start_link(?MODULE, {sup, Strategy, Children}),
    unlink(Sup),
    Sup.

stop_sup(Sup) ->
    Ref = monitor(process, Sup),
    exit(Sup, shutdown),
    receive {'DOWN', Ref, process, Sup, _} -> ok end.

latencies(Strategy, Children, Ix, Restarts) ->
    Sup = start_sup(Strategy, Children),
    try
        Name = name(Ix),
        answered(Name),
        restart_loop(Name, Restarts, [])
    after
        stop_sup(Sup)
    end.

restart_loop(_, 0, Acc) -> lists:reverse(Acc);
restart_loop(Name, K, Acc) ->
    T0 = now_ns(),
    gen_server:cast(Name, crash),
    answered(Name),
    T1 = now_ns(),
    restart_loop(Name, K - 1, [(T1 - T0) / 1000 | Acc]).

answered(Name) ->
    case catch gen_server:call(Name, ping) of
        pong -> ok;
        {'EXIT', _} -> erlang:yield(), answered(Name)
    end.

name(Ix) -> list_to_atom("bench_c" ++ integer_to_list(Ix)).

child(Sup, Ix) ->
    {Ix, Pid, worker, _} = lists:keyfind(Ix, 1, supervisor:which_children(Sup)),
    Pid.

%% One-for-all over N children: crash child 0, time until which_children reports N new
%% pids and the last of them answers a call.
storm(N) ->
    Sup = start_sup(one_for_all, N),
    try
        Old = maps:from_list([{P, true} || {_, P, _, _} <- supervisor:which_children(Sup)]),
        First = child(Sup, 0),
        Ref = monitor(process, First),
        T0 = now_ns(),
        gen_server:cast(First, crash),
        receive {'DOWN', Ref, process, First, _} -> ok end,
        Last = all_new(Sup, Old, N),
        pong = gen_server:call(Last, ping),
        (now_ns() - T0) / 1.0e6
    after
        stop_sup(Sup)
    end.

all_new(Sup, Old, N) ->
    Kids = supervisor:which_children(Sup),
    Fresh = [P || {_, P, _, _} <- Kids, is_pid(P), not maps:is_key(P, Old)],
    case length(Fresh) of
        N -> {_, Last, _, _} = lists:keyfind(N - 1, 1, Kids), Last;
        _ -> all_new(Sup, Old, N)
    end.

start_worker(Name) -> gen_server:start_link({local, Name}, ?MODULE, worker, []).

%% supervisor callback (a {sup, ...} argument) and gen_server callback (worker).
init({sup, Strategy, Children}) ->
    Flags = #{strategy => Strategy, intensity => ?INTENSITY, period => ?PERIOD},
    Specs = [#{id => I, start => {?MODULE, start_worker, [name(I)]}, shutdown => 5000}
             || I <- lists:seq(0, Children - 1)],
    {ok, {Flags, Specs}};
init(worker) ->
    {ok, nostate}.

handle_call(ping, _From, State) -> {reply, pong, State}.
handle_cast(crash, _State) -> erlang:error(crash).
