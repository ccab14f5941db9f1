using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// Snapshot-aware quota accounting (docs/SNAPSHOTS.md §3): referenced and exclusive of every
/// group with snapshots, snapshots of snapshots, clones across subvolumes, deletions and
/// higher-level groups, against numbers worked out by hand and against fsck's recount from
/// the trees after every commit.
/// </summary>
public class QuotaSnapshotTests(ITestOutputHelper log)
{
    private const ulong Root = Filesystem.RootIno;
    private const ulong M = 1UL << 20;
    private static ulong Q0(ulong subvolume) => QgroupId.Of(0, subvolume);

    private static (ulong Referenced, ulong Exclusive) Usage(Filesystem fs, ulong id)
    {
        var g = fs.Qgroups().SingleOrDefault(x => x.Id == id);
        Assert.True(g.Id == id, $"qgroup {QgroupId.Show(id)} does not exist");
        return (g.Referenced, g.Exclusive);
    }

    private static byte[] Data(int seed, ulong len)
    {
        var b = new byte[len];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>Commits, then fsck's full recount from the trees must agree with every number.</summary>
    private static void Commit(Filesystem fs, MemoryBlockDevice dev)
    {
        Ok(fs.Sync());
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void SnapshotsShareUntilChangedAndExclusiveFollowsWhoIsLeft()
    {
        var dev = NewDevice(128UL << 20);
        using var fs = Mount(dev);
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));             // 256
        ulong f = CreateFile(fs, a.Ino, "f", Data(1, M));
        Commit(fs, dev);
        Assert.Equal((M, M), Usage(fs, Q0(256)));

        // A snapshot shares everything: both reference 1 MiB, neither alone.
        Ok(fs.CreateSnapshot(a.Ino, Root, "s1", true, out var s1));   // 257
        Assert.Equal((M, 0UL), Usage(fs, Q0(256)));
        Assert.Equal((M, 0UL), Usage(fs, Q0(257)));
        Commit(fs, dev);
        Assert.Equal((M, 0UL), Usage(fs, Q0(257)));

        // Rewriting the file in a unshares it: a holds the new MiB alone, s1 the old one.
        Ok(fs.Write(f, 0, Data(2, M), out _));
        Commit(fs, dev);
        Assert.Equal((M, M), Usage(fs, Q0(256)));
        Assert.Equal((M, M), Usage(fs, Q0(257)));

        // A writable snapshot of a, and a snapshot of the snapshot s1.
        Ok(fs.CreateSnapshot(a.Ino, Root, "s2", false, out var s2));  // 258
        Ok(fs.CreateSnapshot(s1.Ino, Root, "s3", true, out _));       // 259
        Commit(fs, dev);
        Assert.Equal((M, 0UL), Usage(fs, Q0(256)));
        Assert.Equal((M, 0UL), Usage(fs, Q0(257)));
        Assert.Equal((M, 0UL), Usage(fs, Q0(258)));
        Assert.Equal((M, 0UL), Usage(fs, Q0(259)));

        // Deleting s1 leaves s3 alone with the old MiB; s1's group goes with it.
        Ok(fs.DeleteSubvolume(Root, "s1"));
        Ok(fs.SyncSubvolumeDeletions());
        Commit(fs, dev);
        Assert.DoesNotContain(fs.Qgroups(), g => g.Id == Q0(257));
        Assert.Equal((M, M), Usage(fs, Q0(259)));

        // s2 lets go of the file: a holds the new MiB alone again.
        Ok(fs.Lookup(s2.Ino, "f", out var f2));
        Ok(fs.Truncate(f2.Ino, 0));
        Commit(fs, dev);
        Assert.Equal((0UL, 0UL), Usage(fs, Q0(258)));
        Assert.Equal((M, M), Usage(fs, Q0(256)));

        // A clone into another subvolume shares across subvolumes.
        Ok(fs.CreateSubvolume(Root, "b", 0, 0, out var b));             // 260
        ulong g = CreateFile(fs, b.Ino, "g");
        Ok(fs.CloneRange(f, 0, g, 0, 0));
        Commit(fs, dev);
        Assert.Equal((M, 0UL), Usage(fs, Q0(256)));
        Assert.Equal((M, 0UL), Usage(fs, Q0(260)));

        // When a goes, b is left holding the MiB alone; deleting everything brings every
        // counter back to zero and frees the space.
        Ok(fs.DeleteSubvolume(Root, "a"));
        Ok(fs.SyncSubvolumeDeletions());
        Commit(fs, dev);
        Assert.Equal((M, M), Usage(fs, Q0(260)));
        foreach (var name in new[] { "b", "s2", "s3" }) Ok(fs.DeleteSubvolume(Root, name));
        Ok(fs.SyncSubvolumeDeletions());
        Commit(fs, dev);
        Assert.All(fs.Qgroups(), q => Assert.Equal((0UL, 0UL), (q.Referenced, q.Exclusive)));
        Assert.Equal([5UL], fs.Qgroups().Select(q => q.Id));
    }

    /// <summary>
    /// An origin that lets go of an extent others keep records when (ORIGIN_DROP), written once
    /// it has a snapshot taken after that (or at unmount), and its snapshots taken after that
    /// are not searched for it; taking it back (a clone from a snapshot) removes the record, so
    /// that a snapshot taken after that is searched again. Fails if the record stays: s2 then
    /// holds the extent unseen, deleting s1 makes a hold it alone, and fsck's recount (and its
    /// check that every referrer lies inside an origin's window) disagree.
    /// </summary>
    [Fact]
    public void AnOriginThatLetsGoAndTakesBackAnExtentIsSearchedAgain()
    {
        var dev = NewDevice(128UL << 20);
        ulong old;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));             // 256
            ulong f = CreateFile(fs, a.Ino, "f", Data(1, M));
            Commit(fs, dev);
            Ok(fs.ExtentMap(f, out var map));
            old = map.Single().DiskBytenr;
            Ok(fs.CreateSnapshot(a.Ino, Root, "s1", true, out var s1));   // 257
            Commit(fs, dev);
            Ok(fs.Write(f, 0, Data(2, M), out _));                         // a lets go of the old MiB; s1 keeps it
            Commit(fs, dev);
            Assert.False(HasOriginDrop(fs, old, 256), "no snapshot of a taken since: nothing to write yet");
            Ok(fs.CreateSnapshot(a.Ino, Root, "later", true, out _));     // 258: without the old MiB
            Commit(fs, dev);
            Assert.True(HasOriginDrop(fs, old, 256), "a let go of the extent s1 keeps, and has a snapshot since: an ORIGIN_DROP records when");
            Ok(fs.Lookup(s1.Ino, "f", out var old1));
            ulong back = CreateFile(fs, a.Ino, "back");
            Ok(fs.CloneRange(old1.Ino, 0, back, 0, 0));                    // a takes it back
            Commit(fs, dev);
            Assert.False(HasOriginDrop(fs, old, 256), "a references the extent again");
            Ok(fs.CreateSnapshot(a.Ino, Root, "s2", true, out _));        // 259: has it through a
            Commit(fs, dev);
            Ok(fs.DeleteSubvolume(Root, "s1"));
            Ok(fs.SyncSubvolumeDeletions());
            Commit(fs, dev);
            Assert.Equal((2 * M, 0UL), Usage(fs, Q0(256)));                // both MiB shared with s2
            Assert.Equal((2 * M, 0UL), Usage(fs, Q0(259)));
            Ok(fs.Unlink(a.Ino, "back"));                                  // a lets go again; s2 keeps it
            Commit(fs, dev);
            Assert.Equal((M, 0UL), Usage(fs, Q0(256)));
            Assert.Equal((2 * M, M), Usage(fs, Q0(259)));
        }
        // The unmount writes what was pending, for the next mount.
        using var again = Mount(dev);
        Assert.True(HasOriginDrop(again, old, 256));
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// Snapshot rotation: every file rewritten between one snapshot and the next, then the
    /// oldest deleted. Its extents, which no one else holds, are settled with the same number
    /// of EXTENT_OWNER_REF lookups however many newer snapshots there are (fails without the
    /// writer's ORIGIN_DROP: each extent asked every newer snapshot, 40 lookups an extent at 40
    /// snapshots, 5 at 5). The commit's search is what is counted, so the early accounting is
    /// off: its worker, which reads the same items, would answer for some of the extents or
    /// all, as the host's timing has it.
    /// </summary>
    [Fact]
    public void DeletingTheOldestOfRotatedSnapshotsCostsTheSameAtAnyCount()
    {
        long Lookups(int snapshots)
        {
            var dev = NewDevice(256UL << 20);
            using var fs = Mount(dev, new MountOptions { EarlyAccounting = false });
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));
            var files = Enumerable.Range(0, 8).Select(i => CreateFile(fs, a.Ino, $"f{i}", Data(i, 64 << 10))).ToArray();
            for (int n = 0; n < snapshots; n++)
            {
                Ok(fs.CreateSnapshot(a.Ino, Root, $"s{n}", true, out _));
                foreach (var f in files) Ok(fs.Write(f, 0, Data(100 + n, 64 << 10), out _));
                Ok(fs.Sync());
            }
            long before = fs.Fs.Stats.OwnerRefProbes;
            Ok(fs.DeleteSubvolume(Root, "s0"));
            Ok(fs.SyncSubvolumeDeletions());
            Commit(fs, dev);
            Assert.Equal((8UL * (64 << 10), 8UL * (64 << 10)), Usage(fs, Q0(256)));
            return fs.Fs.Stats.OwnerRefProbes - before;
        }
        long few = Lookups(5), many = Lookups(40);
        log.WriteLine($"lookups deleting the oldest: {few} at 5 snapshots, {many} at 40");
        Assert.True(many <= few, $"{many} lookups at 40 snapshots, {few} at 5");
    }

    /// <summary>
    /// ORIGIN_DROPs waiting in memory when the power goes (noted by a commit, to be written at
    /// the origin's next snapshot) are noted again by the next mount from the trees: the last
    /// commit's superblock says some were pending. Snapshots in rotation, then a crash right
    /// after the last rewrite: the 8 extents only the newest snapshot keeps have their
    /// ORIGIN_DROP once the origin is snapshotted again (without the mount's pass they have
    /// none, and deleting that snapshot would ask every later snapshot of the origin).
    /// </summary>
    [Fact]
    public void OriginDropsPendingAtACrashAreNotedAgainByTheNextMount()
    {
        const int Files = 8;
        var dev = new CrashSimDevice(NewDevice(256UL << 20));
        var kept = new List<ulong>(); // the extents the newest snapshot keeps and a let go of
        var fs = Mount(dev);
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));                 // 256
        var files = Enumerable.Range(0, Files).Select(i => CreateFile(fs, a.Ino, $"f{i}", Data(i, 64 << 10))).ToArray();
        for (int n = 0; n < 4; n++)
        {
            Ok(fs.CreateSnapshot(a.Ino, Root, $"s{n}", true, out _));
            // Committed before the rewrite: the commit that notes a's letting go sees no snapshot
            // of a taken since, so the last ones stay pending (earlier ones are written with the
            // next snapshot's commit).
            Ok(fs.Sync());
            if (n == 3)
                foreach (var f in files) { Ok(fs.ExtentMap(f, out var map)); kept.Add(map.Single().DiskBytenr); }
            foreach (var f in files) Ok(fs.Write(f, 0, Data(100 + n, 64 << 10), out _));
            Ok(fs.Sync());
        }
        Assert.All(kept, e => Assert.False(HasOriginDrop(fs, e, 256), "no snapshot of a since it let go: pending"));
        Assert.NotEqual(0UL, fs.Fs.Super.OriginDropsMissingSince);
        var crashed = dev.DurableImage(); // the power goes here: nothing after the last commit
        fs.Dispose();

        using (var again = Mount(crashed))
        {
            Assert.Equal((long)Files, again.Fs.Stats.OriginDropsRederived);
            Ok(again.CreateSnapshot(a.Ino, Root, "later", true, out _));   // without the kept extents
            Commit(again, crashed);
            Assert.All(kept, e => Assert.True(HasOriginDrop(again, e, 256), "a let go of it before the crash and has a snapshot since"));
            Assert.Equal(0UL, again.Fs.Super.OriginDropsMissingSince);
            Ok(again.DeleteSubvolume(Root, "s3"));
            Ok(again.SyncSubvolumeDeletions());
            Commit(again, crashed);
            // a's current MiB-eighths are shared with "later"; what s3 alone kept is gone.
            Assert.Equal(((ulong)Files << 16, 0UL), Usage(again, Q0(256)));
        }
        using var clean = Mount(crashed);
        Assert.Equal(0L, clean.Fs.Stats.OriginDropsRederived); // a clean unmount leaves none pending
        FsckAssert.Clean(crashed);
    }

    /// <summary>Turning quotas on notes the ORIGIN_DROPs of what origins let go of before (no
    /// commit counted then): a rewrote its file after a snapshot, with quotas off; once they are
    /// on, a's next snapshot gets the old extent's ORIGIN_DROP written.</summary>
    [Fact]
    public void QuotasTurnedOnNoteTheOriginDropsOfWhatWasLetGoBefore()
    {
        var dev = NewDevice(128UL << 20);
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));                 // 256
        ulong f = CreateFile(fs, a.Ino, "f", Data(1, 256 << 10));
        Ok(fs.Sync());
        Ok(fs.ExtentMap(f, out var map));
        ulong old = map.Single().DiskBytenr;
        Ok(fs.CreateSnapshot(a.Ino, Root, "s", true, out _));
        Ok(fs.Write(f, 0, Data(2, 256 << 10), out _));                      // a lets go; s keeps it
        Ok(fs.Sync());
        Ok(fs.EnableQuota());
        Assert.Equal(1L, fs.Fs.Stats.OriginDropsRederived);
        Assert.False(HasOriginDrop(fs, old, 256), "pending until a has a snapshot since");
        Ok(fs.CreateSnapshot(a.Ino, Root, "later", true, out _));
        Commit(fs, dev);
        Assert.True(HasOriginDrop(fs, old, 256));
        Assert.Equal((256UL << 10, 256UL << 10), Usage(fs, Q0(257)));      // s alone keeps the old extent
    }

    private static bool HasOriginDrop(Filesystem fs, ulong bytenr, ulong root)
    {
        var t = fs.Fs.ExtentTree;
        using var lk = t.Lock.Read();
        return t.Search(null, new Reservoir.Format.Key(bytenr, Reservoir.Format.KeyTypes.OriginDrop, root), new Reservoir.Engine.Tree.TreePath());
    }

    [Fact]
    public void AHigherGroupCountsSharedExtentsOnceAndExclusiveOnlyWhenAllReferrersAreMembers()
    {
        var dev = NewDevice(128UL << 20);
        using var fs = Mount(dev);
        Ok(fs.EnableQuota());
        ulong team = QgroupId.Of(1, 100);
        Ok(fs.CreateQgroup(team));
        Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));             // 256
        Ok(fs.AssignQgroup(Q0(256), team));
        ulong f = CreateFile(fs, a.Ino, "f", Data(3, M));
        Commit(fs, dev);
        Assert.Equal((M, M), Usage(fs, team));

        // The snapshot joins its source's group: the group's numbers stay.
        Ok(fs.CreateSnapshot(a.Ino, Root, "s", true, out var s));     // 257
        Assert.Contains((Q0(257), team), fs.QgroupRelations());
        Commit(fs, dev);
        Assert.Equal((M, M), Usage(fs, team));

        // Unsharing adds the new MiB to the group, still all its own.
        Ok(fs.Write(f, 0, Data(4, M), out _));
        Commit(fs, dev);
        Assert.Equal((2 * M, 2 * M), Usage(fs, team));

        // Out of the group, s takes the old MiB with it (a recount).
        Ok(fs.RemoveQgroupRelation(Q0(257), team));
        Commit(fs, dev);
        Assert.Equal((M, M), Usage(fs, team));

        // a clones s's old data back: the group references it again, but shares it with s.
        Ok(fs.Lookup(s.Ino, "f", out var old));
        ulong back = CreateFile(fs, a.Ino, "back");
        Ok(fs.CloneRange(old.Ino, 0, back, 0, 0));
        Commit(fs, dev);
        Assert.Equal((2 * M, M), Usage(fs, team));
        Assert.Equal((2 * M, M), Usage(fs, Q0(256)));
        Assert.Equal((M, 0UL), Usage(fs, Q0(257)));

        // The group's limit holds for the members' writes (and for clones that add to them).
        Ok(fs.SetQgroupLimit(team, 2 * M + M / 2, ulong.MaxValue));
        ulong h = CreateFile(fs, a.Ino, "h");
        Assert.Equal(Errno.EDQUOT, fs.Write(h, 0, new byte[M], out int n));
        Assert.Equal(0, n);
        Ok(fs.Write(h, 0, new byte[M / 4], out _));
        Commit(fs, dev);
        Assert.Equal(2 * M + M / 4, Usage(fs, team).Referenced);
        Ok(fs.CreateSubvolume(Root, "c", 0, 0, out var c));             // 258
        Ok(fs.AssignQgroup(Q0(258), team));
        ulong cf = CreateFile(fs, c.Ino, "f");
        Assert.Equal(Errno.EDQUOT, fs.CloneRange(old.Ino, 0, cf, 0, 0)); // c would reference a MiB more
        Commit(fs, dev);
    }

    /// <summary>
    /// A group holding a subvolume's snapshots but not the subvolume (snapper's layout): when
    /// the source lets an extent go, the group holds it alone only if nobody outside it still
    /// references it; when a member lets go, the group keeps referencing it while another
    /// member does. With four referrers or more the commit decides these by a search that
    /// stops at the first referrer on the side asked about (docs/SNAPSHOTS.md §3), so the
    /// hand-worked numbers here check both sides of that search.
    /// </summary>
    [Fact]
    public void AGroupOfSnapshotsWithoutTheirSourceGainsWhatTheSourceLetsGo()
    {
        var dev = NewDevice(128UL << 20);
        using var fs = Mount(dev);
        Ok(fs.EnableQuota());
        ulong snaps = QgroupId.Of(1, 7);
        Ok(fs.CreateQgroup(snaps));
        Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));             // 256
        ulong f = CreateFile(fs, a.Ino, "f", Data(5, M));
        ulong g = CreateFile(fs, a.Ino, "g", Data(6, M));
        Commit(fs, dev);
        var roots = new List<ulong>();
        for (int i = 0; i < 5; i++)
        {
            Ok(fs.CreateSnapshot(a.Ino, Root, $"s{i}", i >= 3, out var s)); // 257-261; s3, s4 read-only
            roots.Add(s.Ino);
            Ok(fs.AssignQgroup(Q0(257 + (ulong)i), snaps));
        }
        Commit(fs, dev);
        Assert.Equal((2 * M, 0UL), Usage(fs, snaps)); // a shares both files with them

        // a rewrites f: the old f is referenced by the five snapshots only, all in the group.
        Ok(fs.Write(f, 0, Data(7, M), out _));
        Commit(fs, dev);
        Assert.Equal((2 * M, M), Usage(fs, snaps));
        Assert.Equal((2 * M, M), Usage(fs, Q0(256)));

        // Snapshots s0..s2 rewrite the old f one by one: the group keeps referencing it while
        // s3 and s4 do, and each rewrite adds the member's new copy, its own alone.
        for (int i = 0; i < 3; i++)
        {
            Ok(fs.Lookup(roots[i], "f", out var sf));
            Ok(fs.Write(sf.Ino, 0, Data(10 + i, M), out _));
            Commit(fs, dev);
            Assert.Equal((3 * M + (ulong)i * M, 2 * M + (ulong)i * M), Usage(fs, snaps));
        }

        // A subvolume outside the group clones the old g from a snapshot: g is no longer the
        // group's alone... and when a then rewrites g, the clone still keeps it out of reach.
        Ok(fs.CreateSubvolume(Root, "b", 0, 0, out var b));
        Ok(fs.Lookup(roots[4], "g", out var oldG));
        ulong bg = CreateFile(fs, b.Ino, "g");
        Ok(fs.CloneRange(oldG.Ino, 0, bg, 0, 0));
        Commit(fs, dev);
        Assert.Equal((5 * M, 4 * M), Usage(fs, snaps));
        Ok(fs.Write(g, 0, Data(20, M), out _));
        Commit(fs, dev);
        Assert.Equal((5 * M, 4 * M), Usage(fs, snaps));
        // Once b lets it go too, the group holds the old g alone.
        Ok(fs.Unlink(b.Ino, "g"));
        Commit(fs, dev);
        Assert.Equal((5 * M, 5 * M), Usage(fs, snaps));
    }

    [Fact]
    public void QuotasEnabledAfterSnapshotsAndClonesCountTheSharing()
    {
        var dev = NewDevice(128UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));         // 256
            ulong f = CreateFile(fs, a.Ino, "f", Data(5, M));
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(a.Ino, Root, "s", true, out _));     // 257
            Ok(fs.Write(f, 0, Data(6, M / 2), out _));                 // half of it rewritten
            Ok(fs.CreateSubvolume(Root, "b", 0, 0, out var b));         // 258
            ulong g = CreateFile(fs, b.Ino, "g");
            Ok(fs.CloneRange(f, 0, g, 0, 0));
            Ok(fs.EnableQuota());
            Commit(fs, dev);
            Ok(fs.ExtentMap(f, out var map));
            log.WriteLine(string.Join(", ", map.Select(e => $"[{e.FileOffset}, +{e.Length}) of [{e.DiskBytenr}, +{e.DiskLength})")));
            // s holds the first MiB; a and b hold the rewritten half and the old second half.
            Assert.Equal(M, Usage(fs, Q0(257)).Referenced);
            Assert.Equal(Usage(fs, Q0(256)), Usage(fs, Q0(258)));
        }
        using (var fs = Mount(dev))
        {
            // The numbers survive a remount and keep moving: deleting s frees what only it held.
            ulong before = fs.Qgroups().Single(q => q.Id == Q0(256)).Exclusive;
            Assert.Equal(0UL, before);
            Ok(fs.DeleteSubvolume(Root, "s"));
            Ok(fs.SyncSubvolumeDeletions());
            Commit(fs, dev);
        }
    }

    /// <summary>
    /// Quotas off and on again (btrfs's quota disable / enable), with writes in flight across
    /// each switch: disabling drops every group, relation and limit and every owner ref and
    /// SHARED_ROOT_REF (fsck: none may remain); a write past the old limit then succeeds; data
    /// dirtied while quotas were on and written after they went off, and data dirtied while off
    /// and written after they came back on, give back exactly what they reserved (no leak, no
    /// underflow); enabling again counts snapshots and clones afresh, and the counts survive a
    /// remount.
    /// </summary>
    [Fact]
    public void QuotasOffAndOnAgainWithWritesInFlight()
    {
        var dev = NewDevice(128UL << 20);
        ulong a, f, g;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var av));         // 256
            a = av.Ino;
            f = CreateFile(fs, a, "f", Data(7, M));
            Ok(fs.CreateQgroup(QgroupId.Of(1, 1)));
            Ok(fs.AssignQgroup(Q0(256), QgroupId.Of(1, 1)));
            Ok(fs.SetQgroupLimit(Q0(256), 2 * M, ulong.MaxValue));
            Ok(fs.CreateSnapshot(a, Root, "s", true, out _));           // 257
            Ok(fs.CreateSubvolume(Root, "b", 0, 0, out var bv));         // 258
            g = CreateFile(fs, bv.Ino, "g");
            Ok(fs.CloneRange(f, 0, g, 0, 0));
            Commit(fs, dev);
            // The limit holds: of 2 MiB more, the first fits (a short write), the rest does not.
            Ok(fs.Write(f, M, Data(12, 2 * M), out int n));
            Assert.Equal(M, (ulong)n);
            Assert.Equal(Errno.EDQUOT, fs.Write(f, 2 * M, Data(12, M), out _));
            Ok(fs.Truncate(f, M));
            // Dirty while on: reserved against 0/256 and 1/1.
            Ok(fs.Write(f, 0, Data(8, M / 2), out _));
            Assert.Equal(M / 2, fs.Qgroups().Single(q => q.Id == QgroupId.Of(1, 1)).RsvData);

            Ok(fs.DisableQuota());
            Assert.False(fs.QuotaEnabled);
            Assert.Empty(fs.Qgroups());
            Assert.Equal(Errno.ENOTCONN, fs.DisableQuota());
            Assert.Equal(Errno.ENOTCONN, fs.CreateQgroup(QgroupId.Of(1, 2)));
            Ok(fs.Write(f, M, Data(9, 2 * M), out _));                  // no limit any more
            Commit(fs, dev);                                            // writes both back; fsck: no owner refs left
            Assert.Empty(fs.VerifyReservations());
            Assert.Equal(0, fs.LeakedBytes);

            // Dirty while off, written after quotas come back on. (EnableQuota writes back
            // first; the engine's switch itself stands in for a write that lands between that
            // flush and the switch.)
            Ok(fs.Write(f, 3 * M, Data(10, M / 2), out _));
            fs.Fs.EnableQuota();
            Assert.Equal(M / 2, fs.Qgroups().Single(q => q.Id == Q0(256)).RsvData);
            Commit(fs, dev);
            Assert.Empty(fs.VerifyReservations());
            Assert.All(fs.Qgroups(), q => Assert.Equal(0UL, q.RsvData));
            // Counted afresh: no limit, no higher group; a references 3.5 MiB of which the
            // first MiB is shared with the read-only snapshot s (old data in its first half,
            // the clone in b shares the old MiB too).
            Assert.DoesNotContain(fs.Qgroups(), q => QgroupId.Level(q.Id) > 0);
            Assert.All(fs.Qgroups(), q => Assert.Equal(ulong.MaxValue, q.MaxReferenced));
            Assert.Equal(M, Usage(fs, Q0(257)).Referenced);
            Assert.Equal(Usage(fs, Q0(257)).Referenced, Usage(fs, Q0(258)).Referenced);
        }
        var before = new List<(ulong, ulong, ulong)>();
        using (var fs = Mount(dev))
        {
            Assert.True(fs.QuotaEnabled);
            foreach (var q in fs.Qgroups()) before.Add((q.Id, q.Referenced, q.Exclusive));
            Assert.Equal(new[] { Q0(5), Q0(256), Q0(257), Q0(258) }, before.Select(x => x.Item1));
            Ok(fs.DisableQuota());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Assert.False(fs.QuotaEnabled); // off survives a remount
            Ok(fs.Write(f, 0, Data(11, 4 * M), out _));
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>The referrers found for one extent are asked first about the next (ReferrerSearch):
    /// when they hold the first extent the source lets go of but not the second, the second's
    /// search goes on to the one snapshot that has it, which then holds it alone. Without the
    /// lookup of those asked first, c's exclusive would stay 0.</summary>
    [Fact]
    public void ReferrersOfOneExtentAskedFirstAboutTheNextAreLookedUpNotAssumed()
    {
        var dev = NewDevice(128UL << 20);
        const ulong len = 64 << 10;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));       // 256
            ulong f1 = CreateFile(fs, sv.Ino, "f1", Data(1, len));
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(sv.Ino, Root, "a", true, out _));      // 257: extent 1
            Ok(fs.CreateSnapshot(sv.Ino, Root, "b", true, out _));      // 258: extent 1
            ulong f2 = CreateFile(fs, sv.Ino, "f2", Data(2, len));
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(sv.Ino, Root, "c", true, out _));      // 259: extents 1 and 2
            Commit(fs, dev);
            // The source lets go of both in one commit.
            Ok(fs.Write(f1, 0, Data(3, len), out _));
            Ok(fs.Write(f2, 0, Data(4, len), out _));
            Commit(fs, dev);
            Assert.Equal((2 * len, 2 * len), Usage(fs, Q0(256)));
            Assert.Equal((len, 0UL), Usage(fs, Q0(257)));
            Assert.Equal((len, 0UL), Usage(fs, Q0(258)));
            Assert.Equal((2 * len, len), Usage(fs, Q0(259)));            // extent 2 is c's alone
        }
        FsckAssert.Clean(dev);
    }
}
