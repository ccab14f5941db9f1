using Reservoir.Common;
using Reservoir.Common.Collections;
using Reservoir.Engine.Inodes;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    private const int MaxWriteChunk = 1 << 20;
    /// <summary>Read-ahead window: 1 MiB of 4 KiB pages, the kernel's largest default.</summary>
    private const int ReadaheadPages = 256;

    /// <summary>A frame for a new page, from the arena (zeroed unless the caller overwrites it whole).</summary>
    private PageFrame NewPageFrame(bool zeroed) => Arena.Rent(zeroed);

    /// <summary>
    /// The one way a page leaves the cache: out of the mapping (and the dirty index), a clean
    /// page through <see cref="ReleaseCleanPageUnsynchronized"/>, and its frame back to the
    /// arena. Caller holds State and checked the page is neither locked nor under writeback, so
    /// nobody else can still be using its frame. Returns whether it was dirty.
    /// </summary>
    private bool RemovePageUnsynchronized(Mapping m, Page p)
    {
        m.Pages.Remove(p.Index);
        bool dirty = p.Dirty;
        if (dirty) m.DirtyPages.Remove(p.Index);
        else ReleaseCleanPageUnsynchronized(m, p);
        Arena.Return(p.Frame);
        return dirty;
    }

    /// <summary>
    /// A buffered write (caller holds the inode lock exclusively), chunk by chunk: lock the
    /// chunk's pages, reserve, copy, mark dirty, unlock. The reservation is taken with the pages
    /// locked so that writeback, which needs the page locks, cannot turn a page's reservation
    /// into an ordered extent between our reservation and our dirtying of it (the page would
    /// then be dirty with nothing reserved). On EDQUOT or ENOSPC the pages are unlocked, dirty
    /// data is flushed and committed, and the chunk is tried once more; then a short write (or
    /// the error) is returned. A write that fails leaves the file and every counter as if it had
    /// not happened.
    /// </summary>
    public Errno BufferedWrite(Inode inode, ulong offset, ReadOnlySpan<byte> data, out int written)
    {
        written = 0;
        var m = MappingOf(inode);
        ulong bs = (ulong)BlockSize;
        while (written < data.Length)
        {
            ulong pos = offset + (ulong)written;
            int chunk = (int)Math.Min((ulong)(data.Length - written), MaxWriteChunk - (pos % MaxWriteChunk));
            ulong a = pos / bs * bs, b = Units.AlignUp(pos + (ulong)chunk, bs);
            // The chunk's pages are gathered in a list on loan (no allocation per write).
            using var lease = ListLease<Page>.Rent(out var pages);
            LockPagesForWrite(m, pos, chunk, pages);
            Errno e;
            try
            {
                // At most one ordered extent per range: a page whose data is still on its way
                // (ordered extent not finished) is not dirtied again until it has finished, or a
                // second ordered extent could finish before the first and lose the newer data
                // (btrfs waits the same way in lock_and_cleanup_extent_if_need). Completion needs
                // no page lock, so waiting with them held is safe.
                WaitOrdered(m, a, b);
                e = AlreadyReserved(m, a, b) ? Errno.OK : Reserve(m, a, b);
                if (e is Errno.EDQUOT or Errno.ENOSPC)
                {
                    UnlockPages(m, pages);
                    pages.Clear();
                    FlushForSpace();
                    LockPagesForWrite(m, pos, chunk, pages);
                    WaitOrdered(m, a, b);
                    e = Reserve(m, a, b);
                }
            }
            catch
            {
                UnlockPages(m, pages); // a page lock must never outlive its holder
                throw;
            }
            if (e != Errno.OK)
            {
                UnlockPagesDroppingEmpty(m, pages);
                return written > 0 ? Errno.OK : e;
            }
            // The size grows while the chunk's pages are still locked (btrfs_dirty_pages does
            // the same): once they are unlocked the flusher may write them back and finish
            // their ordered extent, which records min(size, extent end) as the size on disk;
            // with the old size it would leave the new extent past the size on disk for good
            // (found with --check-each, and by fsck after an hour-long soak).
            if (pos + (ulong)chunk > inode.Item.FileSize) inode.Item.FileSize = pos + (ulong)chunk;
            CopyIntoLockedPages(m, pages, pos, data.Slice(written, chunk));
            written += chunk;
            // Between chunks of a large write too (balance_dirty_pages_ratelimited), or one
            // call of 32 MiB filled a 4 MiB cache with all of it: the chunk's pages are unlocked
            // now, and only the inode lock is held, as at the end.
            if (written < data.Length) BalanceDirty(m);
        }
        var now = Format.Timespec.Now();
        inode.Item.Mtime = inode.Item.Ctime = now;
        inode.Item.Sequence++;
        BalanceDirty(m);
        return Errno.OK;
    }

    /// <summary>
    /// Re-dirtying: whether [a, b) already owns everything a write needs (wholly Delalloc and
    /// QgroupReserved, or wholly InPlace), so that <see cref="Reserve"/>, which would change
    /// nothing, can be skipped with its lock and lookups. Safe because the caller holds the
    /// range's page locks (writeback cannot turn the range into an ordered extent meanwhile) and
    /// the inode lock (truncate, punch and fallocate cannot free it).
    /// </summary>
    private bool AlreadyReserved(Mapping m, ulong a, ulong b)
    {
        using var _ = m.State.Lock();
        return m.Ledger.AllSet(a, b, RangeBits.Delalloc | RangeBits.QgroupReserved) || m.Ledger.AllSet(a, b, RangeBits.InPlace);
    }

    /// <summary>Locks the pages [pos, pos+len) touches, in ascending order (all or none), into
    /// <paramref name="pages"/> (empty on entry, and on an exception).</summary>
    private void LockPagesForWrite(Mapping m, ulong pos, int len, List<Page> pages)
    {
        ulong bs = (ulong)BlockSize;
        long newPages = 0;
        ulong end = pos + (ulong)len;
        try
        {
            for (ulong p = pos / bs * bs; p < end; p += bs)
            {
                bool whole = p >= pos && p + bs <= end;
                pages.Add(LockPageForWrite(m, (long)(p / bs), whole, ref newPages));
            }
        }
        catch
        {
            UnlockPages(m, pages);
            pages.Clear();
            throw;
        }
        finally { CountPages(newPages, 0); }
    }

    /// <summary>Unlocks the pages of a write that failed before copying, and drops those it
    /// created for a whole-page overwrite: they were never filled, and a clean, empty page must
    /// not stay in the cache looking like data.</summary>
    private void UnlockPagesDroppingEmpty(Mapping m, List<Page> pages)
    {
        long dropped = 0;
        using (m.State.Lock())
        {
            foreach (var p in pages)
            {
                p.Locked = false;
                if (p.Uptodate || p.Dirty || p.Writeback || !m.Pages.TryGetValue(p.Index, out var cur) || cur != p) continue;
                RemovePageUnsynchronized(m, p);
                dropped++;
            }
            m.State.PulseAll();
        }
        CountPages(-dropped, 0);
    }

    private void UnlockPages(Mapping m, List<Page> pages)
    {
        using var _ = m.State.Lock();
        foreach (var p in pages) p.Locked = false;
        m.State.PulseAll();
    }

    /// <summary>Copies data into locked pages (the reservation is made), marks them dirty and
    /// unlocks them.</summary>
    private void CopyIntoLockedPages(Mapping m, List<Page> pages, ulong pos, ReadOnlySpan<byte> data)
    {
        ulong bs = (ulong)BlockSize;
        long newDirty = 0;
        using (m.State.Lock())
        {
            foreach (var page in pages)
            {
                ulong ps = (ulong)page.Index * bs;
                ulong from = Math.Max(ps, pos), to = Math.Min(ps + bs, pos + (ulong)data.Length);
                data.Slice((int)(from - pos), (int)(to - from)).CopyTo(page.Data.Slice((int)(from - ps)));
                page.Uptodate = true;
                if (!page.Dirty)
                {
                    page.Dirty = true;
                    page.DirtiedMs = Sched.NowMs;
                    m.DirtyPages.Add(page.Index);
                    newDirty++;
                }
                page.LastUsed = NextClock();
                page.Locked = false;
            }
            m.State.PulseAll();
        }
        CountPages(0, newDirty);
    }

    /// <summary>Finds or creates page <paramref name="idx"/> and locks it, waiting while it is
    /// locked or under writeback (stable pages: the data being written must not change). A page
    /// only partly overwritten is first read from disk.</summary>
    private Page LockPageForWrite(Mapping m, long idx, bool wholePage, ref long newPages)
    {
        ulong bs = (ulong)BlockSize;
        while (true)
        {
            using (m.State.Lock())
            {
                if (m.Pages.TryGetValue(idx, out var page))
                {
                    if (page.Locked || page.Writeback) { m.State.Wait(); continue; }
                    page.Locked = true;
                    if (page.Uptodate || wholePage) return page;
                }
                else
                {
                    page = new Page(idx, NewPageFrame(zeroed: !wholePage)) { Locked = true };
                    m.Pages[idx] = page;
                    newPages++;
                    if (wholePage) return page;
                }
            }
            // Partly overwritten and not cached: read the rest from disk (after any ordered
            // extent covering it has finished, so the tree says where the data is).
            try { ReadPageFromDisk(m, idx); }
            catch
            {
                Page mine;
                using (m.State.Lock()) mine = m.Pages[idx];
                UnlockPage(m, mine);
                throw;
            }
            using (m.State.Lock()) return m.Pages[idx];
        }
    }

    /// <summary>Fills a locked, not uptodate page from disk (zeros beyond i_size).</summary>
    private void ReadPageFromDisk(Mapping m, long idx)
    {
        ulong bs = (ulong)BlockSize;
        ulong s = (ulong)idx * bs;
        WaitOrdered(m, s, s + bs);
        Page page;
        using (m.State.Lock()) page = m.Pages[idx];
        ulong size = m.Inode.Item.FileSize;
        int have = s < size ? (int)Math.Min(bs, size - s) : 0;
        if (have > 0) FileExtents.Read(Fs, m.Subvol.Tree, m.Inode, s, page.Data.Slice(0, have));
        page.Data.Slice(have).Clear(); // beyond EOF reads as zeros, whatever the frame held before
        using (m.State.Lock()) page.Uptodate = true;
    }

    /// <summary>
    /// A buffered read (caller holds the inode lock shared): from cached pages where present,
    /// otherwise from disk into new pages, with read-ahead on sequential access. Reading from
    /// disk first waits for ordered extents of the range, whose data the tree does not show yet.
    /// </summary>
    public void BufferedRead(Inode inode, ulong offset, Span<byte> dst)
    {
        var m = MappingOf(inode);
        ulong bs = (ulong)BlockSize;
        ulong size = inode.Item.FileSize;
        int done = 0;
        while (done < dst.Length)
        {
            ulong p = offset + (ulong)done;
            long idx = (long)(p / bs);
            int within = (int)(p % bs);
            int n = Math.Min(dst.Length - done, (int)bs - within);
            bool hit = false;
            Page? empty = null;
            using (m.State.Lock())
            {
                if (m.Pages.TryGetValue(idx, out var page))
                {
                    if (page.Uptodate)
                    {
                        page.Data.Slice(within, n).CopyTo(dst.Slice(done));
                        page.LastUsed = NextClock();
                        hit = true;
                    }
                    else if (page.Locked) { m.State.Wait(); continue; } // being filled: wait, do not spin
                    else { page.Locked = true; empty = page; }          // cached but never filled
                }
            }
            if (empty != null)
            {
                // A page in the cache without data (a writer locked it and failed before
                // filling it): fill it from disk here, holding its lock, instead of asking
                // FillPages, which skips pages already cached (that loop never ended).
                try { ReadPageFromDisk(m, idx); }
                finally { UnlockPage(m, empty); }
                continue;
            }
            if (!hit)
            {
                long count = 1;
                if (idx == m.NextReadahead || idx == 0) count = ReadaheadPages;
                long lastPage = (long)((size + bs - 1) / bs);
                count = Math.Max(1, Math.Min(count, lastPage - idx));
                try { FillPages(m, idx, count); }
                catch (FsException) when (count > 1)
                {
                    // Read-ahead is best effort: a bad block further on must not fail this read.
                    FillPages(m, idx, 1);
                }
                continue; // now cached
            }
            m.NextReadahead = idx + 1;
            done += n;
        }
        EvictIfOverBudget();
    }

    /// <summary>Reads pages [idx, idx+count) from disk into the cache (skipping pages that
    /// appeared meanwhile: a page-fault write may have dirtied one).</summary>
    private void FillPages(Mapping m, long idx, long count)
    {
        ulong bs = (ulong)BlockSize;
        ulong s = (ulong)idx * bs, e = (ulong)(idx + count) * bs;
        WaitOrdered(m, s, e);
        int len = (int)(e - s);
        var buf = System.Buffers.ArrayPool<byte>.Shared.Rent(len);
        long added = 0;
        try
        {
            buf.AsSpan(0, len).Clear();
            ulong size = m.Inode.Item.FileSize;
            if (s < size) FileExtents.Read(Fs, m.Subvol.Tree, m.Inode, s, buf.AsSpan(0, (int)Math.Min(e - s, size - s)));
            using (m.State.Lock())
            {
                for (long i = 0; i < count; i++)
                {
                    if (m.Pages.ContainsKey(idx + i)) continue;
                    var frame = NewPageFrame(zeroed: false);
                    buf.AsSpan((int)((ulong)i * bs), (int)bs).CopyTo(frame.Span);
                    m.Pages[idx + i] = new Page(idx + i, frame) { Uptodate = true, LastUsed = NextClock() };
                    added++;
                }
            }
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buf); }
        CountPages(added, 0);
    }

    /// <summary>
    /// Drops pages of [start, end) from the cache. Dirty pages in the range never get written:
    /// their reservations are freed exactly (<see cref="FreeRange"/>). Waits for pages locked or
    /// under writeback, and then for the range's ordered extents: a page the flusher was
    /// writing back is an ordered extent by the time its writeback ends, and that extent must
    /// be in the tree before the caller drops extents (truncate, punch) or inserts its own
    /// (direct IO), not after. (Without the second wait the stress runner found truncated files
    /// with extents past their size, and a direct write overwritten by older data.) Caller
    /// holds the inode lock.
    /// </summary>
    internal void Invalidate(Mapping m, ulong start, ulong end)
    {
        ulong bs = (ulong)BlockSize;
        var (first, last) = PageSpan(start, end);
        long dropped = 0, droppedDirty = 0;
        using (m.State.Lock())
        {
            while (true)
            {
                bool busy = AnyPageIn(m, first, last, p => p.Locked || p.Writeback)
                    || m.AnyOrderedIn((ulong)first * bs, last == long.MaxValue ? ulong.MaxValue : (ulong)last * bs);
                if (!busy) break;
                m.State.Wait();
            }
            foreach (var p in PagesIn(m, first, last))
            {
                dropped++;
                if (RemovePageUnsynchronized(m, p)) droppedDirty++;
            }
        }
        CountPages(-dropped, -droppedDirty);
        FreeRange(m, (ulong)first * bs, last == long.MaxValue ? ulong.MaxValue : (ulong)last * bs);
    }

    /// <summary>The cached pages with index in [first, last), in a new list. A short range (a
    /// direct write of a few blocks into a file with much cached) is looked up page by page,
    /// as <see cref="AnyPageIn"/> does, not found by a pass over every cached page of the
    /// file: that pass, once per direct write, was most of a mixed direct-IO workload's CPU.
    /// Caller holds State.</summary>
    private static List<Page> PagesIn(Mapping m, long first, long last)
    {
        var list = new List<Page>();
        if (last - first <= m.Pages.Count)
        {
            for (long i = first; i < last; i++)
                if (m.Pages.TryGetValue(i, out var p)) list.Add(p);
        }
        else
        {
            foreach (var p in m.Pages.Values)
                if (p.Index >= first && p.Index < last) list.Add(p);
        }
        return list;
    }

    /// <summary>A clean page leaves the cache. It owns nothing: its data's reservations moved to
    /// an ordered extent when it was written back. (With the seed-000 switch, the old bug: the
    /// page's qgroup bits are cleared and their bytes are never freed.) Caller holds State.</summary>
    private void ReleaseCleanPageUnsynchronized(Mapping m, Page p)
    {
        if (!Options.Bugs.OldQgroupReleaseTiming) return;
        ulong bs = (ulong)BlockSize;
        m.Ledger.Clear((ulong)p.Index * bs, ((ulong)p.Index + 1) * bs, RangeBits.QgroupReserved);
    }

    /// <summary>Evicts the least recently used clean pages while the cache is over budget.</summary>
    internal void EvictIfOverBudget()
    {
        long cached = Interlocked.Read(ref _cachedPages);
        long limit = MaxCachedPages;
        if (cached <= limit) return;
        long toFree = cached - limit * 9 / 10;
        // The toFree least recently used clean pages: a bounded max-heap on LastUsed keeps the
        // oldest seen so far (n log k, not a sort of the whole cache on every overflow).
        var oldest = new PriorityQueue<(Mapping M, Page P), long>(Comparer<long>.Create((a, b) => b.CompareTo(a)));
        foreach (var m in AllMappings())
            using (m.State.Lock())
                foreach (var p in m.Pages.Values)
                {
                    if (p.Dirty || p.Locked || p.Writeback) continue;
                    if (oldest.Count < toFree) oldest.Enqueue((m, p), p.LastUsed);
                    else if (oldest.TryPeek(out _, out long newest) && p.LastUsed < newest) oldest.EnqueueDequeue((m, p), p.LastUsed);
                }
        long freed = 0;
        while (oldest.TryDequeue(out var c, out _))
        {
            var (m, p) = c;
            using (m.State.Lock())
            {
                if (p.Dirty || p.Locked || p.Writeback || !m.Pages.TryGetValue(p.Index, out var cur) || cur != p) continue;
                RemovePageUnsynchronized(m, p);
            }
            freed++;
        }
        CountPages(-freed, 0);
    }

    /// <summary>Drops every clean page (tests: "the pages were released").</summary>
    internal void ReleaseCleanPages(Mapping m, ulong start = 0, ulong end = ulong.MaxValue)
    {
        var (first, last) = PageSpan(start, end);
        long freed = 0;
        using (m.State.Lock())
        {
            foreach (var p in PagesIn(m, first, last).Where(p => !p.Dirty && !p.Locked && !p.Writeback))
            {
                RemovePageUnsynchronized(m, p);
                freed++;
            }
        }
        CountPages(-freed, 0);
    }

    /// <summary>
    /// The page-fault write entry point (the kernel's page_mkwrite): makes one page writable
    /// and dirty holding only that page's lock, not the inode lock, so it can race with
    /// fallocate, truncate and direct IO. A page already covered by a reservation (Delayed)
    /// needs nothing more; otherwise (holes, written and unwritten blocks) it reserves through
    /// <see cref="Reserve"/>, which looks at the page's status again under the exclusive mapping
    /// lock (seed 001). Then <paramref name="store"/> writes into the page.
    /// </summary>
    public Errno PageMkwrite(Inode inode, long idx, Action<Span<byte>> store)
    {
        var m = MappingOf(inode);
        ulong bs = (ulong)BlockSize;
        ulong s = (ulong)idx * bs;
        if (s >= Units.AlignUp(inode.Item.FileSize, bs)) return Errno.EFAULT; // SIGBUS beyond EOF
        long newPages = 0;
        var page = LockPageForWrite(m, idx, wholePage: false, ref newPages);
        CountPages(newPages, 0);
        WaitOrdered(m, s, s + bs); // one ordered extent per range (see BufferedWrite)
        try
        {
            // Again under the page lock (the kernel's page_mkwrite checks i_size after
            // lock_page): a truncate sets the size before it invalidates the page cache, so a
            // fault past the new end either holds the page before Invalidate takes it or sees
            // the new size here. The page read past the new size holds zeros.
            if (s >= Units.AlignUp(inode.Item.FileSize, bs)) return Errno.EFAULT;
            ExtentStatus? seen = null;
            using (m.State.Lock())
                if (m.Es.TryLookup(s, out var st, out _, out var end) && end >= s + bs) seen = st;
            Sched.Yield("mkwrite:looked");
            // Delayed: the block's delalloc reservation is already made (the page lock keeps
            // writeback from turning it into an ordered extent meanwhile). Anything else,
            // unwritten blocks included (they need their in-place mark and its metadata share),
            // goes through Reserve, which looks again under DataSem.
            if (seen is not ExtentStatus.Delayed)
            {
                var e = Reserve(m, s, s + bs, seen ?? ExtentStatus.Hole);
                if (e is Errno.EDQUOT or Errno.ENOSPC)
                {
                    UnlockPage(m, page);
                    FlushForSpace();
                    page = LockPageForWrite(m, idx, wholePage: false, ref newPages);
                    WaitOrdered(m, s, s + bs);
                    e = Reserve(m, s, s + bs, null);
                }
                if (e != Errno.OK) return e;
            }
            long dirtied = 0;
            using (m.State.Lock())
            {
                store(page.Data);
                page.Uptodate = true;
                if (!page.Dirty)
                {
                    page.Dirty = true;
                    page.DirtiedMs = Sched.NowMs;
                    m.DirtyPages.Add(idx);
                    dirtied++;
                }
            }
            CountPages(0, dirtied);
            inode.Item.Mtime = inode.Item.Ctime = Format.Timespec.Now();
            return Errno.OK;
        }
        finally { UnlockPage(m, page); }
    }

    private void UnlockPage(Mapping m, Page page)
    {
        using (m.State.Lock())
        {
            if (!page.Locked) return;
            page.Locked = false;
            m.State.PulseAll();
        }
    }
}
