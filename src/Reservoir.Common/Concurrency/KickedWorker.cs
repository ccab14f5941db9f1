namespace Reservoir.Common.Concurrency;

/// <summary>
/// A background thread that runs its work each time it is kicked and, given an interval, at
/// least that often, until it is stopped: the committer (a commit every interval, or sooner
/// when too much is dirty) and the discard worker (after each commit). Its mutex guards only
/// the kick and stop flags; the work runs outside it, so a kick during the work makes one more
/// round, and no kick is lost.
/// </summary>
public sealed class KickedWorker
{
    private readonly FsMutex _lock; // guards _kick and _stopping
    private readonly FsThread _thread;
    private readonly int _intervalMs;
    private readonly Action _work;
    private bool _kick, _stopping;

    /// <param name="intervalMs">Run at least this often; <see cref="Timeout.Infinite"/>: only
    /// when kicked.</param>
    public KickedWorker(IScheduler sched, string name, int intervalMs, Action work)
    {
        _lock = sched.CreateMutex(name);
        _intervalMs = intervalMs;
        _work = work;
        _thread = sched.Start(name, Loop);
    }

    public void Kick()
    {
        using var _ = _lock.Lock();
        _kick = true;
        _lock.PulseAll();
    }

    /// <summary>Stops the thread after the round it is in, and waits for it.</summary>
    public void Stop()
    {
        using (_lock.Lock())
        {
            _stopping = true;
            _lock.PulseAll();
        }
        _thread.Join();
    }

    private void Loop()
    {
        while (true)
        {
            using (_lock.Lock())
            {
                if (_intervalMs == Timeout.Infinite)
                    while (!_stopping && !_kick) _lock.Wait();
                else if (!_stopping && !_kick) _lock.Wait(_intervalMs);
                if (_stopping) return;
                _kick = false;
            }
            _work();
        }
    }
}
