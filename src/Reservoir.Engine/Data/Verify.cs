using Reservoir.Engine.Inodes;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    /// <summary>
    /// The debug check at quiescent points (no operation in flight): every reservation counter
    /// equals the sum of what its ledger says it owns (design notes, invariants 3–7):
    /// - data may_use = bytes marked Delalloc in all ledgers;
    /// - each qgroup's reserved data = its ledgers' QgroupReserved bytes + what unfinished
    ///   ordered extents carry + records waiting for the commit;
    /// - metadata may_use = the mappings' shares + the shares ordered extents carry;
    /// - the size on disk is the file's size unless something above it waits to reach the disk;
    /// - a Delalloc range never lies over a preallocated extent, and status Delayed always has
    ///   a Delalloc reservation (a range is written, unwritten, delayed or a hole, never two);
    /// - conversely, a range holding a Delalloc reservation is cached as Delayed or not at all
    ///   (cached as Written, Unwritten or a hole, the next write could plan it in place).
    /// Returns the violations (empty when all hold).
    /// </summary>
    public List<string> VerifyQuiescent()
    {
        var problems = new List<string>();
        ulong delalloc = 0, qrsv = 0, meta = 0;
        foreach (var m in AllMappings())
        {
            List<(ulong S, ulong E)> delallocRuns;
            using (m.State.Lock())
            {
                delalloc += m.Ledger.Total(RangeBits.Delalloc);
                qrsv += m.Ledger.Total(RangeBits.QgroupReserved);
                meta += m.MetaRsv;
                foreach (var oe in m.Ordered.Values) { qrsv += oe.QgroupRsv; meta += oe.MetaRsv; }
                delallocRuns = m.Ledger.Runs(RangeBits.Delalloc);
                int recount = OutstandingExtentsOf(m, DirtyMask);
                if (recount != m.OutstandingExtents)
                    problems.Add($"inode {m.Inode.Ino}: {m.OutstandingExtents} outstanding extents kept, a recount gives {recount}");
                if (DiskSizeProblem(m) is { } sizeProblem) problems.Add(sizeProblem);
                foreach (var (s, e, st) in m.Es.Entries)
                {
                    ulong reserved = m.Ledger.CountSet(s, e, RangeBits.Delalloc);
                    if (st == ExtentStatus.Delayed && reserved != e - s)
                        problems.Add($"inode {m.Inode.Ino}: [{s}, {e}) is Delayed without a delalloc reservation");
                    if (st != ExtentStatus.Delayed && reserved != 0)
                        problems.Add($"inode {m.Inode.Ino}: [{s}, {e}) is cached as {st} but {reserved} bytes of it hold a delalloc reservation");
                }
            }
            foreach (var (s, e) in delallocRuns)
            {
                ulong pos = s;
                while (pos < e)
                {
                    var (st, end) = QueryDisk(m, pos, e);
                    if (st == ExtentStatus.Unwritten)
                        problems.Add($"inode {m.Inode.Ino}: [{pos}, {end}) holds a delalloc reservation over a preallocated extent");
                    pos = Math.Max(end, pos + (ulong)BlockSize);
                }
            }
        }
        qrsv += Fs.Running.PendingQgroupRecordBytes;
        var space = Fs.Space;
        if (space.Data.MayUse != delalloc) problems.Add($"data may_use {space.Data.MayUse} != delalloc bytes in ledgers {delalloc}");
        if (space.Meta.MayUse != meta) problems.Add($"metadata may_use {space.Meta.MayUse} != reserved by mappings and ordered extents {meta}");
        if (Fs.Quota.TotalRsv != qrsv) problems.Add($"qgroup reserved {Fs.Quota.TotalRsv} != ledgers + ordered extents + records {qrsv}");
        return problems;
    }

    /// <summary>The size on disk stays below the file's size only while something above it
    /// waits to reach the disk; otherwise the inode item (and a snapshot of it, or the image
    /// after unmount) holds a shorter file than the one in memory. Null when it holds. Caller
    /// holds State.</summary>
    internal string? DiskSizeProblem(Mapping m) =>
        !m.Inode.Deleted && !m.Subvol.Dead && m.DiskSize < m.Inode.Item.FileSize && NothingWaitsAboveDiskSize(m)
            ? $"inode {m.Inode.NodeId}: size {m.Inode.Item.FileSize} in memory but {m.DiskSize} on disk, and nothing waits to reach the disk above it"
            : null;
}
