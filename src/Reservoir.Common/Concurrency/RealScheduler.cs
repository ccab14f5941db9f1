using System.Diagnostics;

namespace Reservoir.Common.Concurrency;

/// <summary>Production scheduler: OS threads, Monitor and ReaderWriterLockSlim.</summary>
public sealed class RealScheduler : IScheduler
{
    public static readonly RealScheduler Instance = new();
    private static readonly Stopwatch Clock = Stopwatch.StartNew();

    public FsMutex CreateMutex(string name) => new RealMutex(name);
    public FsRwLock CreateRwLock(string name) => new RealRwLock(name);

    public FsThread Start(string name, Action body)
    {
        var t = new Thread(() => body()) { Name = name, IsBackground = true };
        t.Start();
        return new RealThread(name, t);
    }

    public void Yield(string point) { }
    public long NowMs => Clock.ElapsedMilliseconds;
    public bool IsDeterministic => false;

    private sealed class RealThread(string name, Thread t) : FsThread(name)
    {
        public override void Join() => t.Join();
    }

    private sealed class RealMutex(string name) : FsMutex(name)
    {
        private readonly object _monitor = new();
        /// <summary>Threads inside <see cref="Wait"/>. Guarded by the monitor: both Wait and
        /// PulseAll run with it held, and Monitor.Wait queues the waiter before it releases
        /// the monitor, so a PulseAll that reads 0 has nobody to wake. The write path unlocks
        /// a mapping's state with a PulseAll several times per 4 KiB write, almost always with
        /// no waiter, and Monitor.PulseAll goes into the runtime each time (it was a tenth of
        /// the time of random buffered writes).</summary>
        private int _waiters;
        public override void Enter() => Monitor.Enter(_monitor);
        public override void Exit() => Monitor.Exit(_monitor);
        public override bool IsHeldByCurrentThread => Monitor.IsEntered(_monitor);
        public override bool Wait(int timeoutMs = Timeout.Infinite)
        {
            _waiters++;
            try { return Monitor.Wait(_monitor, timeoutMs); }
            finally { _waiters--; }
        }
        public override void PulseAll()
        {
            if (_waiters > 0) Monitor.PulseAll(_monitor);
        }
    }

    private sealed class RealRwLock(string name) : FsRwLock(name)
    {
        private readonly ReaderWriterLockSlim _l = new(LockRecursionPolicy.NoRecursion);
        public override void EnterRead() => _l.EnterReadLock();
        public override void ExitRead() => _l.ExitReadLock();
        public override void EnterWrite() => _l.EnterWriteLock();
        public override void ExitWrite() => _l.ExitWriteLock();
        public override bool IsWriteHeldByCurrentThread => _l.IsWriteLockHeld;
    }
}
