using Reservoir.Engine.Tree;

namespace Reservoir.Engine.Tx;

/// <summary>
/// One operation's membership in the running transaction (btrfs's trans handle). Created by
/// <see cref="FsInfo.Start"/> after the metadata the operation may dirty has been reserved;
/// node allocations draw on that reservation; disposing returns what was not used and lets a
/// waiting commit proceed. While a handle lives its transaction cannot commit, so an
/// operation's changes are always committed together.
/// </summary>
internal sealed class TransHandle : ITreeContext, IDisposable
{
    private readonly FsInfo _fs;
    private readonly bool _holdsCommitLock;
    private ulong _metaLeft;
    private bool _disposed;
    public Transaction Transaction { get; }
    public ulong Transid => Transaction.Transid;
    /// <summary>Open handles on this thread that have begun changing trees. An exception seen
    /// while this is non-zero means an operation stopped halfway through its changes (read by
    /// exception filters, which run before the handle's Dispose unwinds).</summary>
    [ThreadStatic] private static int _changingOnThread;
    public static int ChangingOnThisThread => _changingOnThread;
    private bool _changing;
    /// <summary>Nodes this handle allocated beyond its reservation (0 when estimates hold).</summary>
    public int Overruns { get; private set; }

    internal TransHandle(FsInfo fs, Transaction tx, ulong metaReserved, bool holdsCommitLock)
    {
        _fs = fs;
        Transaction = tx;
        _metaLeft = metaReserved;
        _holdsCommitLock = holdsCommitLock;
    }

    public void NoteChange()
    {
        if (_changing || !_holdsCommitLock) return;
        _changing = true;
        _changingOnThread++;
    }

    public TreeNode AllocNode(ulong owner, int level)
    {
        ulong ns = (ulong)_fs.NodeSize;
        bool fromRes = _metaLeft >= ns;
        if (fromRes) _metaLeft -= ns;
        else if (_holdsCommitLock) { Overruns++; Interlocked.Increment(ref _fs.Stats.ReservationOverruns); }
        ulong bytenr = _fs.Space.AllocNode(fromRes);
        var node = TreeNode.CreateEmpty(_fs.NodeSize, _fs.Fsid, bytenr, Transid, owner, level);
        node.Dirty = true;
        Transaction.AddDirty(node);
        _fs.Store.Add(node);
        Transaction.Refs.AddTreeRef(bytenr, ns, owner, level, +1, isNew: true, Transid);
        return node;
    }

    public void FreeNode(TreeNode node, ulong owner)
    {
        ulong ns = (ulong)_fs.NodeSize;
        Transaction.Refs.AddTreeRef(node.Bytenr, ns, owner, node.Level, -1, isNew: false, 0);
        // A node born in this transaction was never part of a committed tree: its space can be
        // reused at once. Older nodes stay pinned until this transaction commits.
        bool bornHere = node.Dirty && node.Generation == Transid;
        if (bornHere)
        {
            Transaction.RemoveDirty(node);
            node.Dirty = false;
        }
        _fs.Store.Remove(node.Bytenr);
        _fs.Space.Free(node.Bytenr, ns, pin: !bornHere);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _fs.Space.Release(false, _metaLeft);
        _metaLeft = 0;
        if (_changing) _changingOnThread--;
        if (_holdsCommitLock) _fs.EndHandle(this);
    }
}
