using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>Deleting subvolumes: the space and the quota group given back by the cleaner, nothing
/// of a deleted subvolume reached but through the files open at its deletion (usable until
/// closed, as on btrfs), a held subvolume holding up no other drop, `subvolume sync` and its
/// waits, deletion by id, and deletions an unmount left resumed by the next mount.</summary>
public class SubvolumeDeletionTests
{
    private const ulong Root = Filesystem.RootIno;

    [Fact]
    public void DeletingASubvolumeFreesItsSpaceAndItsQuotaGroup()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Sync());
            Ok(fs.StatFs(out var before));
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            Ok(fs.Mkdir(a.Ino, "d", 0x1ED, 0, 0, out var d));
            for (int i = 0; i < 20; i++) CreateFile(fs, d.Ino, $"f{i}", new byte[200_000]);
            ulong dirty = CreateFile(fs, a.Ino, "dirty");
            Ok(fs.Write(dirty, 0, new byte[100_000], out _)); // still in the page cache
            Ok(fs.CreateSubvolume(a.Ino, "inner", 0, 0, out _));
            Ok(fs.Sync());
            Ok(fs.StatFs(out var full));
            Assert.True(full.BlocksFree < before.BlocksFree - 900, "the files took space");
            Assert.Contains(fs.Qgroups(), g => g.Id == QgroupId.Of(0, 256));

            Assert.Equal(Errno.ENOTEMPTY, fs.DeleteSubvolume(Root, "sv")); // inner first
            Assert.Equal(Errno.EINVAL, fs.DeleteSubvolume(a.Ino, "d"));   // a plain directory
            Ok(fs.Rmdir(a.Ino, "inner"));                                   // empty: rmdir deletes it
            Ok(fs.DeleteSubvolume(Root, "sv"));
            Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "sv", out _)); // the name goes at once
            Ok(fs.SyncSubvolumeDeletions());                            // the space when the cleaner is done
            Assert.Equal(Errno.ENOENT, fs.GetAttr(a.Ino, out _));
            Ok(fs.ListSubvolumes(out var list));
            Assert.Empty(list);
            Ok(fs.Sync());
            Ok(fs.StatFs(out var after));
            Assert.Equal(before.BlocksFree, after.BlocksFree);
            Assert.DoesNotContain(fs.Qgroups(), g => g.Id == QgroupId.Of(0, 256) || g.Id == QgroupId.Of(0, 257));
            Assert.Empty(fs.VerifyReservations());
            Ok(fs.GetAttr(Root, out var rootAttr));
            Assert.Equal(2u, rootAttr.Nlink);
            Assert.Equal(0UL, rootAttr.Size);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            // A new subvolume gets a fresh id; nothing of the old one is left to find.
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            Assert.Equal(Errno.ENOENT, fs.Lookup(a.Ino, "d", out _));
            Assert.Equal(new[] { ".", ".." }, DirNames(fs, a.Ino));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// A deleted subvolume's tree stays until the cleaner has emptied it, and the kernel may
    /// still hold node ids of its inodes (a shell whose working directory was inside it, a
    /// cached entry). Found by BridgeFuzzTests: such an id loaded the subvolume afresh, not dead,
    /// so a create or a write went into the tree being dropped, and a later commit failed with
    /// "tree block reference count would go negative". Every such request must answer ENOENT,
    /// until and after the drop, and the drop must free all.
    /// </summary>
    [Fact]
    public void NothingReachesADeletedSubvolumeWhileItsTreeIsDropped()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Sync());
            Ok(fs.StatFs(out var before));
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            Ok(fs.Mkdir(a.Ino, "d", 0x1ED, 0, 0, out var d));
            ulong f = CreateFile(fs, d.Ino, "f", new byte[50_000]);
            for (int i = 0; i < 100; i++) CreateFile(fs, a.Ino, $"g{i}", new byte[8192]);
            Ok(fs.Sync());
            fs.StopCleaner(); // the drop waits: the tree is still there
            Ok(fs.DeleteSubvolume(Root, "sv"));
            foreach (var ino in new[] { a.Ino, d.Ino, f })
            {
                Assert.Equal(Errno.ENOENT, fs.GetAttr(ino, out _));
                Assert.Equal(Errno.ENOENT, fs.Open(ino, true, out _));
            }
            Assert.Equal(Errno.ENOENT, fs.Create(a.Ino, "new", 0x81A4, 0, 0, out _));
            Assert.Equal(Errno.ENOENT, fs.Mkdir(d.Ino, "new", 0x1ED, 0, 0, out _));
            Assert.Equal(Errno.ENOENT, fs.Write(f, 0, new byte[4096], out _));
            Assert.Equal(Errno.ENOENT, fs.Unlink(d.Ino, "f"));
            Assert.Equal(Errno.ENOENT, fs.CreateSnapshot(a.Ino, Root, "again", false, out _));
            Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "again", out _));
            Ok(fs.Sync()); // a commit after those: nothing went into the dropped tree
            Ok(fs.StatFs(out var pending));
            Assert.True(pending.BlocksFree < before.BlocksFree - 200, "nothing was dropped yet");
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            Ok(fs.StatFs(out var after));
            NoSubvolumeLeftAndEveryReservationAccounted(fs);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// An open racing the deletion: an open that got in first keeps its file usable until it
    /// closes it (btrfs's rule), one that comes after the deletion marked the subvolume dead
    /// fails, and nothing is dropped under an open file (a file opened after the deletion's
    /// check and written into a tree being dropped is what the marking under the open count's
    /// lock prevents). Beside it a writer that never opens (as the engine allows): a write
    /// that got its inode before the deletion may land in the page cache after the deletion
    /// dropped it; the cleaner drops that too before the tree, or its reservation would leak.
    /// Under the deterministic scheduler, so that every interleaving found is replayed by its
    /// seed.
    /// </summary>
    [Fact]
    public void AnOpenRacingTheDeletionKeepsItsFileOrFails()
    {
        int openedFirst = 0, openedLate = 0;
        SchedulerRuns.Within(TimeSpan.FromMinutes(5), 16, () => new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 5 }, (seed, s, fs, failures) =>
        {
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            var data = new byte[20_000];
            new Random(seed).NextBytes(data);
            ulong f = CreateFile(fs, a.Ino, "f", data);
            ulong w = CreateFile(fs, a.Ino, "w", new byte[4096]);
            Errno opened = Errno.OK, del = Errno.OK;
            bool delDone = false;
            // The opener keeps what it opened open until the deletion has answered, then uses it.
            var opener = s.Start("opener", () =>
            {
                opened = fs.Open(f, true, out _);
                while (!Volatile.Read(ref delDone)) s.Yield("opener waits");
                if (opened != Errno.OK) return;
                var back = new byte[data.Length];
                var re = fs.Read(f, 0, back, out int n);
                if (re != Errno.OK || n != data.Length || !back.AsSpan().SequenceEqual(data))
                    lock (failures) failures.Add($"reading the open file after the deletion: {re}, {n} bytes");
                if (fs.Write(f, 0, new byte[4096], out _) is var we and not Errno.OK) lock (failures) failures.Add($"writing the open file after the deletion: {we}");
                if (fs.Fsync(f) is var fe and not Errno.OK) lock (failures) failures.Add($"fsync of the open file after the deletion: {fe}");
                fs.Release(f);
            });
            var writer = s.Start("writer", () =>
            {
                for (int k = 0; k < 50 && fs.Write(w, (ulong)(k % 8) * 4096, new byte[4096], out _) == Errno.OK; k++) s.Yield("writer");
            });
            // And a file open from the start, closed at a different point of the deletion on
            // each seed (through a mount the kernel's FUSE_RELEASE comes when it comes): the
            // close must reach the file whatever the point, or the tree would wait for it for
            // ever. (It answered ENOENT between the marking and the end of the deletion, and
            // `subvolume sync` hung: found by hand, 1 receive in 5 on a full mount.)
            ulong c = CreateFile(fs, a.Ino, "c", new byte[4096]);
            Ok(fs.Open(c, false, out _));
            var closer = s.Start("closer", () =>
            {
                for (int k = 0; k < seed * 3; k++) s.Yield("closer");
                if (fs.Release(c) is var ce and not Errno.OK) lock (failures) failures.Add($"close racing the deletion: {ce}");
            });
            del = fs.DeleteSubvolume(Root, "sv");
            Volatile.Write(ref delDone, true);
            opener.Join();
            writer.Join();
            closer.Join();
            if (del != Errno.OK) failures.Add($"delete: {del}");
            if (failures.Count > 0) return; // a close that got lost would make the sync below wait for ever
            if (opened == Errno.OK) openedFirst++;
            else if (opened == Errno.ENOENT) openedLate++;
            else failures.Add($"open: {opened}");
            if (fs.GetAttr(f, out _) != Errno.ENOENT) failures.Add("the closed file is still reached");
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            failures.AddRange(fs.VerifyReservations());
            if (fs.LeakedBytes != 0) failures.Add($"{fs.LeakedBytes} bytes leaked: {string.Join("; ", fs.LeakReports)}");
        });
        // Both outcomes are seen across the seeds: the race is really run.
        Assert.True(openedFirst > 0 && openedLate > 0, $"{openedFirst} seeds opened before the deletion, {openedLate} after");
    }

    /// <summary>
    /// As on btrfs, a subvolume is deleted with a file of it open: its name goes at once and
    /// nothing else of it can be reached, but the open file reads, writes, fsyncs and stats as
    /// before; its space comes back after the last close (`subvolume sync` waits for it), in
    /// full, with nothing leaked.
    /// </summary>
    [Fact]
    public void ADeletedSubvolumesOpenFilesStayUsableUntilTheLastClose()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Sync());
            Ok(fs.StatFs(out var before));
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            var data = new byte[300_000];
            new Random(8).NextBytes(data);
            ulong f = CreateFile(fs, a.Ino, "f", data);
            ulong g = CreateFile(fs, a.Ino, "g", new byte[10_000]);
            Ok(fs.Sync());
            Ok(fs.Open(f, true, out _));
            Ok(fs.Write(f, 0, new byte[100], out _)); // dirty in the page cache at the deletion
            Ok(fs.DeleteSubvolume(Root, "sv"));
            Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "sv", out _));
            Assert.Equal(Errno.ENOENT, fs.GetAttr(a.Ino, out _));
            Assert.Equal(Errno.ENOENT, fs.GetAttr(g, out _));
            Assert.Equal(Errno.ENOENT, fs.Open(g, false, out _));
            Ok(fs.GetAttr(f, out var fa));
            Assert.Equal((ulong)data.Length, fa.Size);
            Ok(fs.Write(f, (ulong)data.Length, new byte[50_000], out _));
            Ok(fs.Fsync(f));
            var back = ReadAll(fs, f);
            Assert.Equal(new byte[100], back[..100]);
            Assert.Equal(data.AsSpan(100).ToArray(), back[100..data.Length]);
            Assert.Equal(data.Length + 50_000, back.Length);
            Ok(fs.Sync());
            Ok(fs.Release(f));
            Assert.Equal(Errno.ENOENT, fs.GetAttr(f, out _));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            Ok(fs.StatFs(out var after));
            Assert.Equal(before.BlocksFree, after.BlocksFree);
            Assert.DoesNotContain(fs.Qgroups(), q => q.Id == QgroupId.Of(0, 256));
            Assert.Empty(fs.VerifyReservations());
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// A deleted subvolume held by an open file keeps its tree, and only its own: the cleaner
    /// drops the subvolumes deleted after it meanwhile; `subvolume sync` waits for those and
    /// then answers EBUSY naming the held one (rather than waiting for a close that may be the
    /// caller's own), and quota enable and disable answer EBUSY; after the close everything
    /// goes. (A cleaner that waited in line for the close held up every later drop, and sync,
    /// quota disable and the FUSE request asking them, for ever.)
    /// </summary>
    [Fact]
    public async Task AFileHeldOpenHoldsUpOnlyItsOwnSubvolumesDrop()
    {
        var run = Task.Run(() =>
        {
            var dev = NewDevice(64UL << 20);
            using (var fs = Mount(dev))
            {
                Ok(fs.EnableQuota());
                Ok(fs.CreateSubvolume(Root, "held", 0, 0, out var h));
                Ok(fs.CreateSubvolume(Root, "free", 0, 0, out var f));
                ulong hf = CreateFile(fs, h.Ino, "f", new byte[200_000]);
                CreateFile(fs, f.Ino, "g", new byte[3_000_000]);
                ulong held = NodeIds.Decode(h.Ino).TreeId, free = NodeIds.Decode(f.Ino).TreeId;
                Ok(fs.Sync());
                Ok(fs.Open(hf, false, out _));
                Ok(fs.DeleteSubvolume(Root, "held"));
                Ok(fs.DeleteSubvolume(Root, "free"));
                Assert.Equal(Errno.EBUSY, fs.SyncSubvolumeDeletions());
                Assert.Equal([held], fs.DeletionsWaitingForCloses());
                Ok(fs.ListDeletedSubvolumes(out var pending));
                Assert.Equal([held], pending.Select(p => p.Id));
                var groups = fs.Qgroups().Select(q => q.Id).ToList();
                Assert.Contains(QgroupId.Of(0, held), groups);
                Assert.DoesNotContain(QgroupId.Of(0, free), groups); // dropped meanwhile
                Assert.Equal(Errno.EBUSY, fs.DisableQuota());
                Assert.True(fs.QuotaEnabled);
                Ok(fs.Read(hf, 0, new byte[10], out int n));
                Assert.Equal(10, n);
                Ok(fs.Release(hf));
                Ok(fs.SyncSubvolumeDeletions());
                Assert.Empty(fs.DeletionsWaitingForCloses());
                Ok(fs.ListDeletedSubvolumes(out pending));
                Assert.Empty(pending);
                Assert.DoesNotContain(fs.Qgroups(), q => q.Id == QgroupId.Of(0, held));
                Ok(fs.DisableQuota());
                Assert.Empty(fs.VerifyReservations());
            }
            FsckAssert.Clean(dev);
        });
        if (await Task.WhenAny(run, Task.Delay(TimeSpan.FromMinutes(2))) != run)
            throw new Xunit.Sdk.XunitException("no answer within 2 minutes: the sync waits for the held subvolume");
        await run;
    }

    /// <summary>
    /// An unmount while a file of a deleted subvolume is still open (an embedding program that
    /// never closed it, a daemon stopped): the tree is not dropped under the file, the image is
    /// consistent (the orphan item announces the deletion), and the next mount drops it, giving
    /// back all the space and the group.
    /// </summary>
    [Fact]
    public void AnUnmountWithADeletedSubvolumesFileOpenLeavesTheDropToTheNextMount()
    {
        var dev = NewDevice(64UL << 20);
        ulong id;
        Reservoir.Engine.StatFsInfo before;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Sync());
            Ok(fs.StatFs(out before));
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            id = NodeIds.Decode(a.Ino).TreeId;
            ulong f = CreateFile(fs, a.Ino, "f", new byte[2_000_000]);
            Ok(fs.Sync());
            Ok(fs.Open(f, true, out _));
            Ok(fs.Write(f, 0, new byte[5000], out _));
            Ok(fs.DeleteSubvolume(Root, "sv"));
            Assert.Equal(Errno.EBUSY, fs.SyncSubvolumeDeletions());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.ListDeletedSubvolumes(out var pending));
            Assert.Empty(pending);
            Assert.DoesNotContain(fs.Qgroups(), q => q.Id == QgroupId.Of(0, id));
            Ok(fs.Sync());
            Ok(fs.StatFs(out var after));
            Assert.Equal(before.BlocksFree, after.BlocksFree);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// `subvolume delete -i ID`: a subvolume found by its id wherever it is linked (nested in
    /// another here), with the answers btrfs gives by name: ENOENT for no such id (or one
    /// already deleted), EINVAL for the top level, ENOTEMPTY while it holds subvolumes, EBUSY
    /// for the default; its name and group go, and `subvolume sync` of one id waits for that
    /// one alone.
    /// </summary>
    [Fact]
    public void ASubvolumeIsDeletedByItsId()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "outer", 0, 0, out var outer));
            Ok(fs.Mkdir(outer.Ino, "d", 0x1ed, 0, 0, out var d));
            Ok(fs.CreateSubvolume(d.Ino, "inner", 0, 0, out var inner));
            Ok(fs.CreateSubvolume(Root, "held", 0, 0, out var held));
            ulong o = NodeIds.Decode(outer.Ino).TreeId, i = NodeIds.Decode(inner.Ino).TreeId, h = NodeIds.Decode(held.Ino).TreeId;
            CreateFile(fs, inner.Ino, "f", new byte[50_000]);
            ulong hf = CreateFile(fs, held.Ino, "f", new byte[100]);
            Assert.Equal(Errno.ENOENT, fs.DeleteSubvolumeById(999, out _, out _));
            Assert.Equal(Errno.EINVAL, fs.DeleteSubvolumeById(5, out _, out _));
            Assert.Equal(Errno.ENOTEMPTY, fs.DeleteSubvolumeById(o, out _, out _));
            Ok(fs.SetDefaultSubvolume(i));
            Assert.Equal(Errno.EBUSY, fs.DeleteSubvolumeById(i, out _, out _));
            Ok(fs.SetDefaultSubvolume(5));
            Ok(fs.DeleteSubvolumeById(i, out ulong dir, out var name));
            Assert.Equal((d.Ino, "inner"), (dir, System.Text.Encoding.UTF8.GetString(name)));
            Assert.Equal(Errno.ENOENT, fs.Lookup(d.Ino, "inner", out _));
            Assert.Equal(Errno.ENOENT, fs.DeleteSubvolumeById(i, out _, out _));
            // One held by an open file, one not: a sync of the other's id does not wait for it.
            Ok(fs.Open(hf, false, out _));
            Ok(fs.DeleteSubvolumeById(h, out _, out _));
            Ok(fs.DeleteSubvolumeById(o, out _, out _));
            Ok(fs.SyncSubvolumeDeletions(ids: [o]));
            Assert.Equal(Errno.EBUSY, fs.SyncSubvolumeDeletions(ids: [h]));
            Ok(fs.SyncSubvolumeDeletions(ids: [i, 12345]));
            Assert.DoesNotContain(fs.Qgroups(), q => q.Id == QgroupId.Of(0, i) || q.Id == QgroupId.Of(0, o));
            Assert.Contains(fs.Qgroups(), q => q.Id == QgroupId.Of(0, h));
            Ok(fs.Release(hf));
            Ok(fs.SyncSubvolumeDeletions(ids: [h]));
            NoSubvolumeLeftAndEveryReservationAccounted(fs);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// A deletion by id looks the id's name up, then deletes by that name under the lock
    /// renames take: if a rename moved another subvolume under the name in between, that
    /// deletion must answer ESTALE and delete nothing (the look-up is then taken again), never
    /// delete the subvolume that took the name. The in-between state is made here by hand,
    /// since the scheduler does not reach it (a rename holds the lock throughout, and a waiting
    /// deletion gets it next).
    /// </summary>
    [Fact]
    public void ADeletionByIdNeverDeletesASubvolumeRenamedUnderItsName()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));
            Ok(fs.CreateSubvolume(Root, "b", 0, 0, out var b));
            ulong ida = NodeIds.Decode(a.Ino).TreeId, idb = NodeIds.Decode(b.Ino).TreeId;
            Ok(fs.Rename(Root, "a", Root, "c"));
            Ok(fs.Rename(Root, "b", Root, "a"));
            // What the deletion by id would do with the name it looked up before the renames.
            Assert.Equal(Errno.ESTALE, fs.DeleteSubvolumeNamed(Root, "a"u8, expectId: ida));
            Assert.Equal(Errno.ESTALE, fs.DeleteSubvolumeNamed(Root, "gone"u8, expectId: ida));
            Ok(fs.ListSubvolumes(out var all));
            Assert.Equal([ida, idb], all.Select(x => x.Id).Order());
            Ok(fs.DeleteSubvolumeById(ida, out _, out var name));
            Assert.Equal("c", System.Text.Encoding.UTF8.GetString(name));
            Ok(fs.Lookup(Root, "a", out var still));
            Assert.Equal(idb, NodeIds.Decode(still.Ino).TreeId);
            Ok(fs.SyncSubvolumeDeletions());
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// `subvolume sync` asked to wait for closes ends when the last file of the deleted
    /// subvolume is closed, not when its time is up: the close wakes the cleaner, whose drop
    /// wakes the sync. Under the deterministic scheduler, the close coming from another thread
    /// at a different point on each seed.
    /// </summary>
    [Fact]
    public void SyncAskedToWaitEndsAtTheLastClose()
    {
        SchedulerRuns.Within(TimeSpan.FromMinutes(5), 16, () => new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 5 }, (seed, s, fs, failures) =>
        {
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            ulong f = CreateFile(fs, a.Ino, "f", new byte[20_000]);
            ulong g = CreateFile(fs, a.Ino, "g", new byte[100]);
            Ok(fs.Open(f, true, out _));
            Ok(fs.Open(g, false, out _));
            Ok(fs.DeleteSubvolume(Root, "sv"));
            var closer = s.Start("closer", () =>
            {
                for (int k = 0; k < seed * 2; k++) s.Yield("closer");
                fs.Release(g);
                for (int k = 0; k < seed; k++) s.Yield("closer");
                fs.Release(f);
            });
            long t0 = s.NowMs;
            var e = fs.SyncSubvolumeDeletions(waitForClosesMs: 60_000);
            closer.Join();
            if (e != Errno.OK) failures.Add($"sync: {e}");
            else if (s.NowMs - t0 >= 60_000) failures.Add($"sync ended after {s.NowMs - t0} ms: at its time, not at the close");
            if (fs.DeletionsWaitingForCloses().Count != 0) failures.Add("still waiting for closes after the sync");
            failures.AddRange(fs.VerifyReservations());
        });
    }

    [Fact]
    public void ADeletionTheCleanerDidNotFinishResumesAtTheNextMount()
    {
        var dev = NewDevice(64UL << 20);
        StatFsInfo before;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Sync());
            Ok(fs.StatFs(out before));
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            for (int i = 0; i < 200; i++) CreateFile(fs, a.Ino, $"f{i}", new byte[8192]); // several drop batches
            Ok(fs.Sync());
            fs.StopCleaner(); // as an unmount does: what is queued now stays for the next mount
            Ok(fs.DeleteSubvolume(Root, "sv"));
            Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "sv", out _));
            Ok(fs.Sync());
            Ok(fs.StatFs(out var pending));
            Assert.True(pending.BlocksFree < before.BlocksFree - 300, "nothing was dropped yet");
        }
        var report = Reservoir.Engine.Check.Fsck.Run(dev);
        Assert.True(report.Clean, string.Join("\n", report.Errors));
        Assert.Contains(report.Findings, f => f.Where == "subvolume 256" && f.Message.Contains("deleted"));
        using (var fs = Mount(dev))
        {
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            Ok(fs.StatFs(out var after));
            Ok(fs.ListSubvolumes(out var list));
            Assert.Empty(list);
            Assert.DoesNotContain(fs.Qgroups(), g => g.Id == QgroupId.Of(0, 256));
            Assert.Equal(before.BlocksFree, after.BlocksFree);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>Every subvolume is gone (dropped, not only unlinked) and every reservation is
    /// accounted for.</summary>
    private static void NoSubvolumeLeftAndEveryReservationAccounted(Filesystem fs)
    {
        Ok(fs.ListSubvolumes(out var left));
        Assert.Empty(left);
        Assert.Empty(fs.VerifyReservations());
    }
}
