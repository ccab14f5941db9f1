using System.Buffers;
using Reservoir.Common;
using Reservoir.Common.Collections;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    /// <summary>
    /// Writes back the dirty pages of [start, end), widened to whole dirty runs: each run becomes
    /// one or more ordered extents (at most one extent long each), written, then finished by the
    /// completion workers. With <paramref name="wait"/> it waits for pages locked or under
    /// writeback by others, and returns only when its own IO and theirs in the range is done
    /// (so that each such page's ordered extent exists); it never waits for completion (use
    /// <see cref="WaitOrdered"/>: "writeback finished" is not "ordered extent finished",
    /// invariant 8).
    /// Takes page locks and State; holds no inode lock, so the flusher can run it for anyone.
    /// With <paramref name="finishInline"/> the calling thread finishes its own ordered extents
    /// as their IO ends instead of handing them to the completion workers: for a caller that
    /// holds no lock and no transaction handle and would only wait for them (a small fsync),
    /// that saves two thread wake-ups, a good part of an fsync's latency on a small machine.
    /// </summary>
    internal void Writeback(Mapping m, ulong start, ulong end, bool wait, bool finishInline = false)
    {
        ulong bs = (ulong)BlockSize;
        while (true)
        {
            // The run's pages are gathered in a list on loan (no allocation per writeback).
            using var lease = ListLease<Page>.Rent(out var run);
            using (m.State.Lock())
            {
                PickDirtyRun(m, start, end, wait, run);
                if (run.Count == 0)
                {
                    // Pages another thread (the flusher) took for writeback are no longer dirty,
                    // and their ordered extent may not exist yet: it is created after the pages
                    // are taken. Waiting only for ordered extents would miss them, and an fsync
                    // or a direct read would return before that data was on disk (the
                    // deterministic stress sweep caught a direct read returning old data).
                    while (wait && m.PagesInWriteback > 0 && AnyWritebackIn(m, start, end)) m.State.Wait();
                    return;
                }
                foreach (var p in run)
                {
                    p.Locked = true;
                    p.Dirty = false;
                    p.Writeback = true;
                    m.DirtyPages.Remove(p.Index);
                }
                m.PagesInWriteback += run.Count;
            }
            CountPages(0, -run.Count);
            Sched.Yield("writeback:pages-locked");
            WriteRun(m, run, finishInline);
        }
    }

    /// <summary>The first run of contiguous dirty pages meeting [start, end), extended to the
    /// whole run, into <paramref name="run"/> (left empty when there is none); pages locked or
    /// under writeback end a run (or are waited for when <paramref name="wait"/>). Caller holds
    /// State.</summary>
    private void PickDirtyRun(Mapping m, ulong start, ulong end, bool wait, List<Page> run)
    {
        var (first, last) = PageSpan(start, end);
        while (true)
        {
            long idx = -1;
            foreach (var i in m.DirtyPages.Between(first, last == long.MaxValue ? long.MaxValue : last - 1))
            {
                var p = m.Pages[i];
                if (p.Locked || p.Writeback)
                {
                    if (wait) { idx = -2; break; }
                    continue;
                }
                idx = i;
                break;
            }
            if (idx == -2) { m.State.Wait(); continue; }
            if (idx < 0) return;
            // Extend backwards and forwards over dirty, unlocked pages of the same kind.
            bool inPlace = IsInPlace(m, idx);
            long lo = idx, hi = idx;
            while (m.DirtyPages.Contains(lo - 1) && Usable(m, lo - 1) && IsInPlace(m, lo - 1) == inPlace) lo--;
            while (m.DirtyPages.Contains(hi + 1) && Usable(m, hi + 1) && IsInPlace(m, hi + 1) == inPlace) hi++;
            for (long i = lo; i <= hi; i++) run.Add(m.Pages[i]);
            return;
        }
    }

    /// <summary>Whether a page of [start, end) is under writeback. Caller holds State.</summary>
    private bool AnyWritebackIn(Mapping m, ulong start, ulong end)
    {
        var (first, last) = PageSpan(start, end);
        return AnyPageIn(m, first, last, static p => p.Writeback);
    }

    /// <summary>Whether a cached page with index in [first, last) matches: by index when the
    /// span is smaller than the cache, else over the cached pages. Caller holds State.</summary>
    private static bool AnyPageIn(Mapping m, long first, long last, Func<Page, bool> match)
    {
        if (last - first <= m.Pages.Count)
        {
            for (long i = first; i < last; i++)
                if (m.Pages.TryGetValue(i, out var p) && match(p)) return true;
            return false;
        }
        foreach (var p in m.Pages.Values)
            if (p.Index >= first && p.Index < last && match(p)) return true;
        return false;
    }

    private static bool Usable(Mapping m, long i) => m.Pages.TryGetValue(i, out var p) && !p.Locked && !p.Writeback;

    private bool IsInPlace(Mapping m, long idx)
    {
        ulong bs = (ulong)BlockSize;
        ulong s = (ulong)idx * bs;
        return m.Ledger.CountSet(s, s + bs, RangeBits.InPlace) > 0;
    }

    /// <summary>Turns a locked run of pages into ordered extents and writes them.</summary>
    private void WriteRun(Mapping m, List<Page> run, bool finishInline)
    {
        ulong bs = (ulong)BlockSize;
        ulong runStart = (ulong)run[0].Index * bs;
        ulong runEnd = ((ulong)run[^1].Index + 1) * bs;
        bool inPlace;
        using (m.State.Lock()) inPlace = IsInPlace(m, run[0].Index);
        var pieces = inPlace ? InPlaceTargets(m, runStart, runEnd) : null;
        ulong pos = runStart;
        int pieceIdx = 0;
        while (pos < runEnd)
        {
            OrderedExtent oe;
            if (!inPlace)
            {
                // Copy-on-write: new space, paid for by the range's delalloc reservation.
                var (disk, len) = Fs.Space.AllocData(runEnd - pos, fromReservation: true, hint: 0);
                oe = CreateOrdered(m, pos, len, disk, len, 0, OrderedKind.Regular);
            }
            else
            {
                var (fpos, flen, disk, dlen, eoff, kind) = pieces![pieceIdx++];
                oe = CreateOrdered(m, fpos, flen, disk, dlen, eoff, kind);
            }
            SubmitOrdered(m, oe, run, finishInline);
            pos = oe.End;
        }
    }

    /// <summary>For an in-place run: the extents it lands in (preallocated, or written ones of a
    /// no-CoW file), as (file offset, length, disk extent, disk length, offset in extent, kind).</summary>
    private List<(ulong, ulong, ulong, ulong, ulong, OrderedKind)> InPlaceTargets(Mapping m, ulong start, ulong end)
    {
        var list = new List<(ulong, ulong, ulong, ulong, ulong, OrderedKind)>();
        bool noCow = (m.Inode.Item.Flags & InodeFlags.NoDataCow) != 0;
        using var lk = m.Subvol.Tree.Lock.Read();
        foreach (var mp in FileExtents.Overlapping(m.Subvol.Tree, m.Inode.Ino, start, end))
        {
            var kind = mp.Fe.Type == FileExtentType.Prealloc ? OrderedKind.Prealloc
                : mp.Fe.Type == FileExtentType.Regular && noCow ? OrderedKind.NoCow
                : throw new CorruptionException($"in-place dirty range [{start}, {end}) is neither preallocated nor no-CoW on disk", inode: m.Inode.Ino);
            ulong a = Math.Max(mp.Pos, start), b = Math.Min(mp.End, end);
            list.Add((a, b - a, mp.Fe.DiskBytenr, mp.Fe.DiskNumBytes, mp.Fe.Offset + (a - mp.Pos), kind));
        }
        ulong covered = list.Aggregate(0UL, (s, x) => s + x.Item2);
        if (covered != end - start) throw new CorruptionException($"in-place dirty range [{start}, {end}) has holes on disk", inode: m.Inode.Ino);
        return list;
    }

    /// <summary>
    /// Creates an ordered extent for [pos, pos+len) and moves ownership into it (btrfs
    /// alloc_ordered_extent with the seed-000 fix): the range's qgroup bytes leave the ledger and
    /// are carried by the ordered extent; the delalloc bytes were consumed by the allocation; one
    /// share of metadata reservation moves from the mapping. In-place extents reserved neither.
    /// </summary>
    private OrderedExtent CreateOrdered(Mapping m, ulong pos, ulong len, ulong disk, ulong diskLen, ulong extOff, OrderedKind kind)
    {
        var oe = new OrderedExtent { FileOffset = pos, NumBytes = len, DiskBytenr = disk, DiskNumBytes = diskLen, ExtentOffset = extOff, Kind = kind, BytesLeft = len };
        ulong delallocCleared;
        using (m.State.Lock())
        {
            delallocCleared = ChangeDirtyBits(m, pos, pos + len, RangeBits.Delalloc, set: false);
            ChangeDirtyBits(m, pos, pos + len, RangeBits.InPlace, set: false);
            if (!Options.Bugs.OldQgroupReleaseTiming) oe.QgroupRsv = m.Ledger.Clear(pos, pos + len, RangeBits.QgroupReserved);
            ulong share = Math.Min(m.MetaRsv, MetaPerExtent);
            m.MetaRsv -= share;
            oe.MetaRsv = share;
            m.Es.Remove(pos, pos + len);
            m.Ordered[pos] = oe;
        }
        if (kind is OrderedKind.Regular or OrderedKind.Direct && delallocCleared != len)
            ThrowHelper.Invariant($"inode {m.Inode.Ino}: ordered extent [{pos}, +{len}) consumed {len} reserved bytes but the ledger held {delallocCleared}");
        TrimMeta(m);
        return oe;
    }

    /// <summary>Unlocks the pages of an ordered extent, writes them straight from their frames
    /// in gathered writes and checksums them; on completion of the IO queues the ordered extent
    /// for finishing. No copy is needed: pages stay under writeback until the IO ends, and
    /// every path that changes or frees a page waits for writeback first (stable pages).</summary>
    private void SubmitOrdered(Mapping m, OrderedExtent oe, List<Page> run, bool finishInline)
    {
        ulong bs = (ulong)BlockSize;
        // The run is contiguous and ascending, so the extent's pages are one slice of it,
        // run[first, first + count), used in place; their frames are gathered in a pooled array
        // (no allocation per page: Reservoir.Bench --alloc).
        int first = (int)((long)(oe.FileOffset / bs) - run[0].Index), count = (int)(oe.NumBytes / bs);
        if (run[first].Index * (long)bs != (long)oe.FileOffset || run[first + count - 1].Index != run[first].Index + count - 1)
            ThrowHelper.Invariant($"inode {m.Inode.Ino}: ordered extent [{oe.FileOffset}, +{oe.NumBytes}) does not match its pages");
        var frames = ArrayPool<ReadOnlyMemory<byte>>.Shared.Rent(count);
        try { SubmitFrames(m, oe, run, first, count, frames, finishInline); }
        finally { ArrayPool<ReadOnlyMemory<byte>>.Shared.Return(frames, clearArray: true); }
    }

    /// <summary><see cref="SubmitOrdered"/> with the frames' array: the pages are unlocked
    /// (they stay under writeback), written and checksummed, and the IO ends.</summary>
    private void SubmitFrames(Mapping m, OrderedExtent oe, List<Page> run, int first, int count, ReadOnlyMemory<byte>[] frames, bool finishInline)
    {
        ulong bs = (ulong)BlockSize;
        int len = (int)oe.NumBytes;
        for (int i = 0; i < count; i++) frames[i] = run[first + i].Frame.Memory;
        oe.Csums = new uint[count];
        using (m.State.Lock())
        {
            for (int i = first; i < first + count; i++) run[i].Locked = false;
            m.State.PulseAll();
        }
        Sched.Yield("writeback:submit");
        bool ok = true;
        // In pieces of 1 MiB, each checksummed right after it was written, while its bytes are
        // still in the CPU's cache from the copy into the device: checksumming is bound by
        // memory bandwidth, and this way the pages are read from memory once, not twice. The
        // checksums are needed only when the ordered extent finishes, and the pages stay
        // stable (under writeback) until then.
        int piece = Math.Max(1, (1 << 20) / (int)bs);
        for (int at = 0; at < count; at += piece)
        {
            int n = Math.Min(piece, count - at);
            if (ok)
            {
                // A small fsync's own writeback (finishInline) is followed by the commit's flush
                // at once: no early start of the host's write-out, one IO submission less per
                // fsync (fsync-append through the mount: median of 7 alternating runs 864 ->
                // 1,005 fsyncs/s on the 2-core VM).
                try { Fs.Device.WriteGather(oe.DiskBytenr + oe.ExtentOffset + (ulong)at * bs, new ArraySegment<ReadOnlyMemory<byte>>(frames, at, n), startWriteOut: !finishInline); }
                catch (FsException ex)
                {
                    ok = false;
                    Fs.Warn($"inode {m.Inode.Ino}: writeback of [{oe.FileOffset}, +{oe.NumBytes}) failed: {ex.Message}");
                }
            }
            for (int i = at; i < at + n; i++) oe.Csums[i] = Crc32C.Compute(run[first + i].Data);
        }
        Fs.Stats.DataBytesWritten += len;
        EndIo(m, oe, run, first, count, ok, finishInline);
    }

    /// <summary>IO completion (end_bio_extent_writepage): pages run[first, first + count)
    /// leave writeback, and the ordered extent, once all its bytes are done, goes to the
    /// completion workers.</summary>
    private void EndIo(Mapping m, OrderedExtent oe, List<Page> run, int first, int count, bool ok, bool finishInline)
    {
        using (m.State.Lock())
        {
            for (int i = first; i < first + count; i++) run[i].Writeback = false;
            m.PagesInWriteback -= count;
            if (!ok) oe.IoError = true;
            oe.BytesLeft = 0;
            oe.IoDone = true;
            m.State.PulseAll();
        }
        if (finishInline) FinishOrdered(m, oe);
        else QueueFinish(m, oe);
    }

    /// <summary>Writes back old dirty pages (older than <paramref name="olderThanMs"/>).</summary>
    private void WritebackExpired(Mapping m, long olderThanMs)
    {
        ulong bs = (ulong)BlockSize;
        List<long> old;
        using (m.State.Lock()) old = m.DirtyPages.All.Where(i => m.Pages[i].DirtiedMs <= olderThanMs).ToList();
        foreach (var i in old) Writeback(m, (ulong)i * bs, ((ulong)i + 1) * bs, wait: false);
    }

    /// <summary>Waits until every ordered extent overlapping [start, end) has finished.</summary>
    internal void WaitOrdered(Mapping m, ulong start, ulong end)
    {
        using var _ = m.State.Lock();
        while (m.AnyOrderedIn(start, end)) m.State.Wait();
    }
}
