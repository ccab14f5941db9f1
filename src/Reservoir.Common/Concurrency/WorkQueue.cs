namespace Reservoir.Common.Concurrency;

/// <summary>
/// A pool of worker threads fed from a FIFO queue, built only from <see cref="IScheduler"/>
/// primitives so that it runs under the deterministic scheduler too. Used for the periodic
/// committer today and for ordered-extent completion workers by the write path.
/// </summary>
public sealed class WorkQueue : IDisposable
{
    private readonly FsMutex _lock; // guards _items, _stopping, _busy
    private readonly Queue<Action> _items = new();
    private readonly List<FsThread> _workers = new();
    private bool _stopping;
    private int _busy;
    public Action<Exception>? OnError { get; set; }

    public WorkQueue(IScheduler sched, string name, int workers)
    {
        _lock = sched.CreateMutex(name + ".queue");
        for (int i = 0; i < workers; i++) _workers.Add(sched.Start($"{name}/{i}", Loop));
    }

    public void Enqueue(Action work)
    {
        using var _ = _lock.Lock();
        if (_stopping) throw new InvalidOperationException("work queue stopped");
        _items.Enqueue(work);
        _lock.PulseAll();
    }

    /// <summary>Waits until the queue is empty and no worker is busy.</summary>
    public void Drain()
    {
        using var _ = _lock.Lock();
        while (_items.Count > 0 || _busy > 0) _lock.Wait();
    }

    private void Loop()
    {
        while (true)
        {
            Action work;
            using (_lock.Lock())
            {
                while (_items.Count == 0 && !_stopping) _lock.Wait();
                if (_items.Count == 0) return;
                work = _items.Dequeue();
                _busy++;
            }
            try { work(); }
            catch (Exception ex) when (ex is not SchedulerAbortedException) { OnError?.Invoke(ex); }
            using (_lock.Lock())
            {
                _busy--;
                _lock.PulseAll();
            }
        }
    }

    public void Dispose()
    {
        using (_lock.Lock())
        {
            _stopping = true;
            _lock.PulseAll();
        }
        foreach (var w in _workers) w.Join();
    }
}
