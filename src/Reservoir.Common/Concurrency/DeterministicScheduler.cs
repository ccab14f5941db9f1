namespace Reservoir.Common.Concurrency;

public enum ScheduleStrategy
{
    /// <summary>At every scheduling point pick a runnable thread uniformly at random.</summary>
    RandomWalk,
    /// <summary>Probabilistic Concurrency Testing (Burckhardt et al., ASPLOS 2010): run the
    /// highest-priority runnable thread; at <c>depth-1</c> random steps lower the running
    /// thread's priority. Finds a bug of depth d with probability at least 1/(n·k^(d-1)).</summary>
    Pct,
}

/// <summary>Thrown out of <see cref="DeterministicScheduler.Run"/> when every live thread waits
/// on something no one will release.</summary>
public sealed class DeadlockException(string message) : Exception(message);

/// <summary>Unwinds logical threads when a run is aborted; never caught by engine code.</summary>
public sealed class SchedulerAbortedException() : Exception("deterministic run aborted");

/// <summary>
/// Runs logical threads one at a time on real OS threads, handing a baton from one to the next
/// at every lock operation and <see cref="Yield"/>. The choice of who runs next comes only from
/// the seed, so a run is replayed exactly by running it again with the same seed. Time is
/// virtual: it advances only when no thread can run and someone waits with a timeout.
/// </summary>
public sealed class DeterministicScheduler : IScheduler
{
    private readonly Random _rng;
    private readonly ScheduleStrategy _strategy;
    private readonly List<LThread> _threads = new();
    private readonly HashSet<long> _changePoints = new();
    private readonly object _state = new(); // guards the baton hand-off itself
    private LThread? _running;
    private long _steps;
    private long _now;
    private int _nextId;
    private int _lowPriority;
    private bool _aborted;
    private Exception? _failure;

    /// <summary>What the OS thread of a logical thread named N is called: this, then N.</summary>
    public const string ThreadNamePrefix = "det:";
    [ThreadStatic] private static LThread? _me;

    public int Seed { get; }
    public long Steps => _steps;
    /// <summary>The last scheduling points visited, for failure reports.</summary>
    public Queue<string> Trace { get; } = new();

    public DeterministicScheduler(int seed, ScheduleStrategy strategy = ScheduleStrategy.Pct, int pctDepth = 3, int pctSteps = 20000)
    {
        Seed = seed;
        _rng = new Random(seed);
        _strategy = strategy;
        for (int i = 0; i < pctDepth - 1; i++) _changePoints.Add(_rng.NextInt64(1, pctSteps));
        _lowPriority = pctDepth;
    }

    public bool IsDeterministic => true;
    public long NowMs => _now;

    /// <summary>Runs <paramref name="main"/> as the first logical thread and returns when it and
    /// every thread it started have finished. Rethrows the first failure of any thread.</summary>
    public void Run(Action main)
    {
        if (_me != null) throw new InvalidOperationException("nested Run");
        var root = NewThread("main", main);
        lock (_state) _running = root;
        root.Gate.Release();
        root.Done.Wait();
        // Wait for the rest; a thread left blocked when main ends is itself a failure.
        while (true)
        {
            LThread? blocked;
            lock (_state)
            {
                if (_failure != null || _threads.All(t => t.State == TState.Done)) break;
                blocked = _threads.FirstOrDefault(t => t.State != TState.Done);
            }
            if (blocked != null && !blocked.Done.Wait(10000))
            {
                Abort(new DeadlockException($"seed {Seed}: thread '{blocked.Name}' still alive after main finished ({blocked.State} on {blocked.BlockedOn})"));
                break;
            }
        }
        if (_failure != null) throw new AggregateException($"deterministic run failed (seed {Seed}, step {_steps}); last points: {string.Join(" ", Trace)}", _failure);
    }

    /// <summary>Every live thread and what it waits on (for hang reports).</summary>
    public string Describe()
    {
        lock (_state)
            return string.Join("; ", _threads.Where(t => t.State != TState.Done).Select(t => $"{t.Name}: {t.State}{(t.BlockedOn != null ? " on " + NameOf(t.BlockedOn) : "")}"));
    }

    private static string NameOf(object o) => o switch
    {
        FsMutex m => "mutex " + m.Name,
        FsRwLock l => "rwlock " + l.Name,
        FsThread t => "thread " + t.Name,
        CondTag c => "Wait() on mutex " + c.Name,
        _ => o.GetType().Name,
    };

    private sealed record CondTag(string Name);

    public FsThread Start(string name, Action body)
    {
        var me = Current();
        var t = NewThread(name, body);
        Reschedule(me, "start:" + name);
        return t;
    }

    public void Yield(string point) => Reschedule(Current(), point);

    public FsMutex CreateMutex(string name) => new DMutex(this, name);
    public FsRwLock CreateRwLock(string name) => new DRwLock(this, name);

    private LThread Current()
    {
        var me = _me ?? throw new InvalidOperationException("engine call outside DeterministicScheduler.Run");
        if (_aborted) throw new SchedulerAbortedException();
        return me;
    }

    private LThread NewThread(string name, Action body)
    {
        LThread t;
        lock (_state)
        {
            t = new LThread(this, _nextId++, name, body) { Priority = _lowPriority + _rng.Next(1, 1_000_000) };
            _threads.Add(t);
        }
        var os = new Thread(t.Main) { Name = ThreadNamePrefix + name, IsBackground = true };
        os.Start();
        return t;
    }

    /// <summary>The baton hand-off: choose who runs next (possibly <paramref name="me"/>), wake
    /// it, and if it is not <paramref name="me"/> block until someone hands the baton back.</summary>
    private void Reschedule(LThread me, string point)
    {
        LThread next;
        lock (_state)
        {
            _steps++;
            if (Trace.Count >= 32) Trace.Dequeue();
            Trace.Enqueue(me.Name + "@" + point);
            if (_changePoints.Contains(_steps)) me.Priority = --_lowPriority;
            next = Pick();
            if (next == me) return;
            _running = next;
        }
        next.Gate.Release();
        me.Gate.Wait();
        if (_aborted) throw new SchedulerAbortedException();
    }

    /// <summary>Caller holds _state.</summary>
    private LThread Pick()
    {
        while (true)
        {
            var runnable = _threads.Where(t => t.State == TState.Runnable).ToList();
            if (runnable.Count > 0)
            {
                if (_strategy == ScheduleStrategy.RandomWalk) return runnable[_rng.Next(runnable.Count)];
                return runnable.MaxBy(t => t.Priority)!;
            }
            var sleepers = _threads.Where(t => t.State == TState.Blocked && t.Deadline != long.MaxValue).ToList();
            if (sleepers.Count == 0)
            {
                var live = _threads.Where(t => t.State != TState.Done).Select(t => $"{t.Name} on {t.BlockedOn}");
                var ex = new DeadlockException($"seed {Seed}: deadlock at step {_steps}: {string.Join(", ", live)}");
                _failure ??= ex;
                _aborted = true;
                foreach (var t in _threads) t.Gate.Release();
                throw ex;
            }
            _now = sleepers.Min(t => t.Deadline);
            foreach (var t in sleepers.Where(t => t.Deadline <= _now))
            {
                t.State = TState.Runnable;
                t.TimedOut = true;
            }
        }
    }

    private void Abort(Exception ex)
    {
        lock (_state)
        {
            _failure ??= ex;
            _aborted = true;
            foreach (var t in _threads) t.Gate.Release();
        }
    }

    private void Block(LThread me, object on, long timeoutMs, string point)
    {
        lock (_state)
        {
            me.State = TState.Blocked;
            me.BlockedOn = on;
            me.TimedOut = false;
            me.Deadline = timeoutMs < 0 ? long.MaxValue : _now + timeoutMs;
        }
        Reschedule(me, point);
    }

    private void WakeAll(object on)
    {
        lock (_state)
        {
            foreach (var t in _threads)
                if (t.State == TState.Blocked && ReferenceEquals(t.BlockedOn, on))
                {
                    t.State = TState.Runnable;
                    t.BlockedOn = null;
                }
        }
    }

    private enum TState { Runnable, Blocked, Done }

    private sealed class LThread(DeterministicScheduler s, int id, string name, Action body) : FsThread(name)
    {
        public readonly SemaphoreSlim Gate = new(0);
        public readonly ManualResetEventSlim Done = new(false);
        public TState State = TState.Runnable;
        public object? BlockedOn;
        public long Deadline = long.MaxValue;
        public bool TimedOut;
        public long Priority;
        public int Id = id;

        public void Main()
        {
            _me = this;
            Gate.Wait();
            try
            {
                if (!s._aborted) body();
            }
            catch (SchedulerAbortedException) { }
            catch (Exception ex)
            {
                s.Abort(ex);
            }
            LThread? next = null;
            lock (s._state)
            {
                State = TState.Done;
                s.WakeAllUnlocked(this);
                if (!s._aborted && s._threads.Any(t => t.State != TState.Done))
                {
                    try { next = s.Pick(); s._running = next; }
                    catch (DeadlockException) { }
                }
            }
            Done.Set();
            next?.Gate.Release();
        }

        public override void Join()
        {
            var me = s.Current();
            while (State != TState.Done) s.Block(me, this, -1, "join:" + Name);
        }
    }

    private void WakeAllUnlocked(object on)
    {
        foreach (var t in _threads)
            if (t.State == TState.Blocked && ReferenceEquals(t.BlockedOn, on))
            {
                t.State = TState.Runnable;
                t.BlockedOn = null;
            }
    }

    private sealed class DMutex(DeterministicScheduler s, string name) : FsMutex(name)
    {
        private LThread? _owner;
        private readonly CondTag _cond = new(name);

        public override void Enter()
        {
            var me = s.Current();
            if (_owner == me) ThrowHelper.Invariant($"recursive enter of mutex {Name}");
            s.Reschedule(me, "lock:" + Name);
            while (_owner != null) s.Block(me, this, -1, "wait-lock:" + Name);
            _owner = me;
        }

        public override void Exit()
        {
            var me = s.Current();
            if (_owner != me) ThrowHelper.Invariant($"exit of mutex {Name} not held");
            _owner = null;
            s.WakeAll(this);
            s.Reschedule(me, "unlock:" + Name);
        }

        public override bool IsHeldByCurrentThread => _owner != null && _owner == _me;

        public override bool Wait(int timeoutMs = Timeout.Infinite)
        {
            var me = s.Current();
            if (_owner != me) ThrowHelper.Invariant($"wait on mutex {Name} not held");
            _owner = null;
            s.WakeAll(this);
            s.Block(me, _cond, timeoutMs, "cond:" + Name);
            bool pulsed = !me.TimedOut;
            while (_owner != null) s.Block(me, this, -1, "wait-lock:" + Name);
            _owner = me;
            return pulsed;
        }

        public override void PulseAll()
        {
            if (_owner != _me) ThrowHelper.Invariant($"pulse on mutex {Name} not held");
            s.WakeAll(_cond);
        }
    }

    private sealed class DRwLock(DeterministicScheduler s, string name) : FsRwLock(name)
    {
        private readonly HashSet<LThread> _readers = new();
        private LThread? _writer;
        private int _writersWaiting;

        public override void EnterRead()
        {
            var me = s.Current();
            if (_readers.Contains(me) || _writer == me) ThrowHelper.Invariant($"recursive enter of rwlock {Name}");
            s.Reschedule(me, "rlock:" + Name);
            while (_writer != null || _writersWaiting > 0) s.Block(me, this, -1, "wait-rlock:" + Name);
            _readers.Add(me);
        }

        public override void ExitRead()
        {
            var me = s.Current();
            if (!_readers.Remove(me)) ThrowHelper.Invariant($"read exit of rwlock {Name} not held");
            s.WakeAll(this);
            s.Reschedule(me, "runlock:" + Name);
        }

        public override void EnterWrite()
        {
            var me = s.Current();
            if (_readers.Contains(me) || _writer == me) ThrowHelper.Invariant($"recursive enter of rwlock {Name}");
            s.Reschedule(me, "wlock:" + Name);
            _writersWaiting++;
            while (_writer != null || _readers.Count > 0) s.Block(me, this, -1, "wait-wlock:" + Name);
            _writersWaiting--;
            _writer = me;
        }

        public override void ExitWrite()
        {
            var me = s.Current();
            if (_writer != me) ThrowHelper.Invariant($"write exit of rwlock {Name} not held");
            _writer = null;
            s.WakeAll(this);
            s.Reschedule(me, "wunlock:" + Name);
        }

        public override bool IsWriteHeldByCurrentThread => _writer != null && _writer == _me;
    }
}
