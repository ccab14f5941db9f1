namespace Reservoir.Common.Collections;

/// <summary>
/// A <see cref="List{T}"/> on loan from its thread's spare, for a hot path that gathers a few
/// items per call (the pages of a write chunk, the plan of a reservation) and would otherwise
/// allocate a list and its array every time. <c>using var lease = ListLease&lt;T&gt;.Rent(out var
/// list);</c>: the list is empty on loan, cleared when the lease ends, and must not be kept past
/// it. A nested loan on the same thread gets a list of its own; a list grown past
/// <see cref="MaxKeptCapacity"/> is let go rather than kept.
/// </summary>
public readonly struct ListLease<T> : IDisposable
{
    public const int MaxKeptCapacity = 4096;

    [ThreadStatic] private static List<T>? t_spare;

    private readonly List<T> _list;

    private ListLease(List<T> list) => _list = list;

    public static ListLease<T> Rent(out List<T> list)
    {
        list = t_spare ?? new List<T>();
        t_spare = null;
        return new ListLease<T>(list);
    }

    public void Dispose()
    {
        _list.Clear();
        if (_list.Capacity <= MaxKeptCapacity) t_spare = _list;
    }
}
