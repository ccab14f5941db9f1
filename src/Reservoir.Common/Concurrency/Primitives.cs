namespace Reservoir.Common.Concurrency;

/// <summary>
/// A mutual-exclusion lock with one Monitor-style wait queue. Every lock the engine takes is
/// one of these (or an <see cref="FsRwLock"/>), created by an <see cref="IScheduler"/>, so that a
/// test can swap in the deterministic scheduler and decide who runs at each acquisition.
/// Not recursive: entering a mutex the thread already holds is a bug.
/// </summary>
public abstract class FsMutex(string name)
{
    public string Name { get; } = name;
    public abstract void Enter();
    public abstract void Exit();
    public abstract bool IsHeldByCurrentThread { get; }

    /// <summary>Releases the mutex, waits for <see cref="PulseAll"/> or the timeout, re-acquires.
    /// Returns false on timeout. The caller must hold the mutex and re-check its condition.</summary>
    public abstract bool Wait(int timeoutMs = Timeout.Infinite);

    /// <summary>Wakes every thread in <see cref="Wait"/>. The caller must hold the mutex.</summary>
    public abstract void PulseAll();

    public Scope Lock()
    {
        Enter();
        return new Scope(this);
    }

    public readonly struct Scope(FsMutex m) : IDisposable
    {
        public void Dispose() => m.Exit();
    }
}

/// <summary>
/// A reader-writer lock. Writers are preferred: once a writer waits, new readers wait too, so a
/// committer cannot be starved by a stream of operations. Not recursive in either mode.
/// </summary>
public abstract class FsRwLock(string name)
{
    public string Name { get; } = name;
    public abstract void EnterRead();
    public abstract void ExitRead();
    public abstract void EnterWrite();
    public abstract void ExitWrite();
    public abstract bool IsWriteHeldByCurrentThread { get; }

    public ReadScope Read()
    {
        EnterRead();
        return new ReadScope(this);
    }

    public WriteScope Write()
    {
        EnterWrite();
        return new WriteScope(this);
    }

    public readonly struct ReadScope(FsRwLock l) : IDisposable
    {
        public void Dispose() => l.ExitRead();
    }

    public readonly struct WriteScope(FsRwLock l) : IDisposable
    {
        public void Dispose() => l.ExitWrite();
    }
}

public abstract class FsThread(string name)
{
    public string Name { get; } = name;
    public abstract void Join();
}

/// <summary>
/// The one source of threads, locks, time and scheduling points in the engine. Production uses
/// <see cref="RealScheduler"/>; tests use <see cref="DeterministicScheduler"/>, which runs one
/// logical thread at a time and picks the next at every lock operation and <see cref="Yield"/>,
/// from a seed, so that an interleaving found once replays exactly.
/// </summary>
public interface IScheduler
{
    FsMutex CreateMutex(string name);
    FsRwLock CreateRwLock(string name);
    FsThread Start(string name, Action body);

    /// <summary>A named point where another thread may run: free in production.</summary>
    void Yield(string point);

    /// <summary>Monotonic milliseconds (virtual under the deterministic scheduler).</summary>
    long NowMs { get; }

    /// <summary>True when the scheduler runs one thread at a time (tests): code may then assert
    /// on interleavings but must never spin waiting for another thread.</summary>
    bool IsDeterministic { get; }
}

/// <summary>
/// Locks made on first use, when the scheduler is known only then. <c>field ??= sched.CreateMutex(…)</c>
/// is no way to do it: two threads using the lock for the first time at once can each make a
/// lock of their own, and then it excludes nothing (the early accounting's worker and a sync
/// that drained it ran two batches at once over one list: "collection was modified"). The
/// first lock stored wins; one made by a thread that lost is dropped unused.
/// </summary>
public static class LazyLocks
{
    public static FsMutex Mutex(ref FsMutex? field, IScheduler sched, string name)
    {
        var m = Volatile.Read(ref field);
        if (m != null) return m;
        var made = sched.CreateMutex(name);
        return Interlocked.CompareExchange(ref field, made, null) ?? made;
    }
}
