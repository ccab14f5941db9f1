using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// The early accounting (docs/SNAPSHOTS.md §3, "Early accounting") case by case, drained by
/// hand before each commit so that the commit meets its answers.
/// </summary>
public class EarlyAccountingTests
{
    private const ulong Root = Filesystem.RootIno;

    private static ulong Id(InodeAttr a) => Reservoir.Engine.Inodes.NodeIds.Decode(a.Ino).TreeId;

    /// <summary>The referenced and exclusive bytes of a subvolume's level-0 group.</summary>
    private static (ulong, ulong) Numbers(Filesystem fs, InodeAttr a)
    {
        var x = fs.Qgroups().Single(q => q.Id == QgroupId.Of(0, Id(a)));
        return (x.Referenced, x.Exclusive);
    }

    /// <summary>Whether the extent tree holds the item (extent, <paramref name="type"/>, subvolume).</summary>
    private static bool HasItem(Filesystem fs, ulong extent, byte type, ulong subvolume)
    {
        var t = fs.Fs.ExtentTree;
        using (t.Lock.Read())
            return t.Search(null, new Reservoir.Format.Key(extent, type, subvolume), new Reservoir.Engine.Tree.TreePath());
    }

    /// <summary>One step worked out early: <paramref name="change"/>, the worker drained, a
    /// commit that takes its answers with nothing left to it, and a recount that agrees.</summary>
    private static void EarlyStep(Filesystem fs, Action change, string what)
    {
        long taken = fs.Fs.Stats.EarlyTaken, left = fs.Fs.Stats.EarlyLeftToCommit;
        change();
        fs.Fs.DrainEarlyAccounting();
        Ok(fs.Sync());
        Assert.True(fs.Fs.Stats.EarlyTaken > taken, $"{what}: the commit took no early answer");
        Assert.True(left == fs.Fs.Stats.EarlyLeftToCommit, $"{what}: {fs.Fs.Stats.EarlyLeftToCommit - left} extents left to the commit");
        Ok(fs.RescanQuota(out int corrected));
        Assert.True(corrected == 0, $"{what}: the recount corrected {corrected} groups");
    }

    /// <summary>
    /// A subvolume lets go of an extent a snapshot keeps (the early accounting notes the
    /// subvolume's ORIGIN_DROP), then takes it back in the same transaction by a clone from the
    /// snapshot: the answer no longer holds, and neither may its ORIGIN_DROP, or a snapshot of
    /// the subvolume taken later, which has the extent, would lie outside its origin's window
    /// (fsck) and never be asked about it. The numbers come out as the recount's throughout.
    /// </summary>
    [Fact]
    public void AnExtentLetGoOfAndTakenBackInOneTransactionLeavesNoOriginDrop()
    {
        var dev = NewDevice(64UL << 20);
        var old = new byte[64 << 10];
        var now = new byte[64 << 10];
        new Random(1).NextBytes(old);
        new Random(2).NextBytes(now);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            ulong f = CreateFile(fs, sv.Ino, "f", old);
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: true, out var s1));
            Ok(fs.Sync());
            long taken = fs.Fs.Stats.EarlyTaken;

            Ok(fs.Write(f, 0, now, out _));
            Ok(fs.Fsync(f));                 // the old extent let go of: s1 keeps it
            fs.Fs.DrainEarlyAccounting();    // worked out: sv's ORIGIN_DROP noted
            Ok(fs.Lookup(s1.Ino, "f", out var s1f));
            ulong g = CreateFile(fs, sv.Ino, "g");
            Ok(fs.CloneRange(s1f.Ino, 0, g, 0, 0)); // and taken back
            Ok(fs.Sync());
            Assert.True(fs.Fs.Stats.EarlyTaken > taken, "the commit took no early answer: the case is not exercised");
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s2", readOnly: true, out var s2));
            Ok(fs.Sync());                   // sv has a snapshot since: its pending ORIGIN_DROPs are written
            Ok(fs.Lookup(s2.Ino, "g", out var s2g));
            Assert.Equal(old, ReadAll(fs, s2g.Ino));
            Ok(fs.RescanQuota(out int corrected));
            Assert.Equal(0, corrected);
            // s1 goes: sv and s2 keep the old extent, so neither holds it alone.
            ulong gOf(ulong id) => fs.Qgroups().Single(q => q.Id == QgroupId.Of(0, id)).Exclusive;
            ulong svExcl = gOf(Reservoir.Engine.Inodes.NodeIds.Decode(sv.Ino).TreeId);
            Ok(fs.DeleteSubvolume(Root, "s1"));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            Assert.Equal(svExcl, gOf(Reservoir.Engine.Inodes.NodeIds.Decode(sv.Ino).TreeId));
            Ok(fs.RescanQuota(out corrected));
            Assert.Equal(0, corrected);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// The commit with every answer worked out early (nothing left to it) applies the answers'
    /// ORIGIN_DROPs too: a subvolume that let go of an extent a snapshot keeps gets its
    /// ORIGIN_DROP once it has a snapshot since, as when the commit works the extent out itself.
    /// (Without it nothing is wrong, only slower: later snapshots would be asked about the
    /// extent forever; so only the item shows it.)
    /// </summary>
    [Fact]
    public void ACommitLeftNothingStillRecordsTheOriginDropsOfItsAnswers()
    {
        var dev = NewDevice(64UL << 20);
        var old = new byte[64 << 10];
        new Random(1).NextBytes(old);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        ulong svId = Reservoir.Engine.Inodes.NodeIds.Decode(sv.Ino).TreeId;
        ulong f = CreateFile(fs, sv.Ino, "f", old);
        Ok(fs.Sync());
        Ok(fs.ExtentMap(f, out var map));
        ulong extent = map.Single().DiskBytenr;
        Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: true, out _));
        Ok(fs.Sync());
        long taken = fs.Fs.Stats.EarlyTaken, left = fs.Fs.Stats.EarlyLeftToCommit;
        Ok(fs.Write(f, 0, new byte[64 << 10], out _));
        Ok(fs.Fsync(f));                 // the old extent let go of: s1 keeps it
        fs.Fs.DrainEarlyAccounting();    // worked out: sv's ORIGIN_DROP noted with the answer
        Ok(fs.Sync());
        Assert.True(fs.Fs.Stats.EarlyTaken > taken, "the commit took no early answer");
        Assert.Equal(left, fs.Fs.Stats.EarlyLeftToCommit); // nothing left to the commit
        Ok(fs.CreateSnapshot(sv.Ino, Root, "s2", readOnly: true, out _));
        Ok(fs.Sync());                   // sv has a snapshot since: its pending ORIGIN_DROPs are written
        Assert.True(HasItem(fs, extent, Reservoir.Format.KeyTypes.OriginDrop, svId), "no ORIGIN_DROP for the extent sv let go of");
        Ok(fs.RescanQuota(out int corrected));
        Assert.Equal(0, corrected);
    }

    /// <summary>
    /// An extent a clone shares (a SHARED_ROOT_REF) let go of by one subvolume is worked out
    /// early too, its candidates those of every origin: sv writes f, the tenant t clones it
    /// (t is an origin from then on) and a writable snapshot ts of t is taken. sv rewrites f: t
    /// and ts keep the old extent (candidates only through t's lineage). t rewrites its clone:
    /// ts keeps it alone, and t, an origin, gets its ORIGIN_DROP. ts removes its copy: the
    /// extent goes, with its SHARED_ROOT_REF and ORIGIN_DROPs (fsck finds any left behind; a
    /// deleted subvolume would do the same, but its tree going in the same transaction as its
    /// last extents can drop the answers, as it must). Each step is
    /// taken from the early answers with nothing left to the commit; numbers worked out by hand,
    /// a recount agrees after each.
    /// </summary>
    [Fact]
    public void AnExtentACloneSharesIsWorkedOutEarlyWhenOneOfItsOriginsLetsGo()
    {
        const ulong F = 64 << 10;
        var dev = NewDevice(64UL << 20);
        var data = new byte[F];
        new Random(3).NextBytes(data);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            Ok(fs.CreateSubvolume(Root, "t", 0, 0, out var t));
            ulong f = CreateFile(fs, sv.Ino, "f", data);
            Ok(fs.Sync());
            Ok(fs.ExtentMap(f, out var map));
            ulong extent = map.Single().DiskBytenr;
            ulong c = CreateFile(fs, t.Ino, "c");
            Ok(fs.CloneRange(f, 0, c, 0, 0));
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(t.Ino, Root, "ts", readOnly: false, out var ts));
            Ok(fs.Sync());
            Assert.Equal((F, 0UL), Numbers(fs, sv));
            Assert.Equal((F, 0UL), Numbers(fs, t));
            Assert.Equal((F, 0UL), Numbers(fs, ts));

            data[0] ^= 1;
            EarlyStep(fs, () => { Ok(fs.Write(f, 0, data, out _)); Ok(fs.Fsync(f)); }, "sv's rewrite");
            Assert.Equal((F, F), Numbers(fs, sv));   // the new f, alone
            Assert.Equal((F, 0UL), Numbers(fs, t));  // the old one, shared with ts
            Assert.Equal((F, 0UL), Numbers(fs, ts));
            data[1] ^= 1;
            EarlyStep(fs, () => { Ok(fs.Write(c, 0, data, out _)); Ok(fs.Fsync(c)); }, "t's rewrite");
            Assert.Equal((F, F), Numbers(fs, t));    // its new c, alone
            Assert.Equal((F, F), Numbers(fs, ts));   // the old extent, alone now
            Ok(fs.CreateSnapshot(t.Ino, Root, "t2", readOnly: true, out _));
            Ok(fs.Sync());                       // t has a snapshot since: its pending ORIGIN_DROP is written
            Assert.True(HasItem(fs, extent, Reservoir.Format.KeyTypes.OriginDrop, Id(t)), "no ORIGIN_DROP for the extent t, a clone's origin, let go of");
            EarlyStep(fs, () => Ok(fs.Unlink(ts.Ino, "c")), "ts's unlink");
            Assert.Equal((0UL, 0UL), Numbers(fs, ts));
            Assert.Equal((F, F), Numbers(fs, sv));
            Assert.Equal((F, 0UL), Numbers(fs, t));  // shared with t2
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// An extent a subvolume takes by a clone is worked out early too, with level-0 groups: sv
    /// writes f, a snapshot s1 shares it, and sv writes g alone. The tenant t clones f: t gains
    /// it, nobody's exclusive moves (sv and s1 have it), and the commit writes t's
    /// SHARED_ROOT_REF. The tenant u clones g: u gains it and sv no longer holds g alone. A
    /// snapshot t2 of t taken after, which has f through t, lies in t's window only by that
    /// SHARED_ROOT_REF (fsck checks every referrer's window). Each step is taken from the early
    /// answers with nothing left to the commit; numbers worked out by hand, a recount agrees.
    /// </summary>
    [Fact]
    public void AnExtentTakenByACloneIsWorkedOutEarly()
    {
        const ulong F = 64 << 10;
        var dev = NewDevice(64UL << 20);
        var data = new byte[F];
        new Random(4).NextBytes(data);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            Ok(fs.CreateSubvolume(Root, "t", 0, 0, out var t));
            Ok(fs.CreateSubvolume(Root, "u", 0, 0, out var u));
            ulong f = CreateFile(fs, sv.Ino, "f", data);
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: true, out var s1));
            data[0] ^= 1;
            ulong g = CreateFile(fs, sv.Ino, "g", data);
            Ok(fs.Sync());
            Ok(fs.ExtentMap(f, out var fMap));
            ulong fExtent = fMap.Single().DiskBytenr;
            Assert.Equal((2 * F, F), Numbers(fs, sv));
            EarlyStep(fs, () => Ok(fs.CloneRange(f, 0, CreateFile(fs, t.Ino, "c"), 0, 0)), "t's clone of f");
            Assert.Equal((F, 0UL), Numbers(fs, t));
            Assert.Equal((2 * F, F), Numbers(fs, sv));   // f shared as before, g its own
            Assert.Equal((F, 0UL), Numbers(fs, s1));
            Assert.True(HasItem(fs, fExtent, Reservoir.Format.KeyTypes.SharedRootRef, Id(t)), "no SHARED_ROOT_REF for the extent t took by a clone");
            EarlyStep(fs, () => Ok(fs.CloneRange(g, 0, CreateFile(fs, u.Ino, "c"), 0, 0)), "u's clone of g");
            Assert.Equal((F, 0UL), Numbers(fs, u));
            Assert.Equal((2 * F, 0UL), Numbers(fs, sv));  // g shared with u now
            Ok(fs.CreateSnapshot(t.Ino, Root, "t2", readOnly: true, out var t2));
            Ok(fs.Sync());
            Assert.Equal((F, 0UL), Numbers(fs, t2));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// An origin taking back an extent it let go of (a file restored from a snapshot by a
    /// clone) is worked out early too, with level-0 groups, and its ORIGIN_DROP goes. sv writes
    /// f and h, s1 is taken, sv rewrites f (s1 keeps the old f), s2 is taken (sv's ORIGIN_DROP
    /// of old f is written: sv has a snapshot since), sv rewrites h (s1 and s2 keep the old h;
    /// the drop stays pending, no snapshot since). The tenant t clones s1's k and rewrites its
    /// clone (t, an origin by its SHARED_ROOT_REF, lets go; s1 keeps it). Then sv clones old f
    /// back from s1 (the written ORIGIN_DROP goes), old h (the pending one goes) and t clones k
    /// back. A snapshot of each taken after holds what was taken back: it lies in its origin's
    /// window only if the window reopened (fsck checks every referrer's window). Each step is
    /// taken from the early answers with nothing left to the commit; numbers worked out by
    /// hand, a recount agrees after each.
    /// </summary>
    [Fact]
    public void AnOriginTakingAnExtentBackIsWorkedOutEarly()
    {
        const ulong F = 64 << 10;
        var dev = NewDevice(64UL << 20);
        var rng = new Random(5);
        byte[] Data() { var d = new byte[F]; rng.NextBytes(d); return d; }
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            Ok(fs.CreateSubvolume(Root, "t", 0, 0, out var t));
            ulong f = CreateFile(fs, sv.Ino, "f", Data());
            ulong h = CreateFile(fs, sv.Ino, "h", Data());
            CreateFile(fs, sv.Ino, "k", Data());
            Ok(fs.Sync());
            Ok(fs.ExtentMap(f, out var fMap));
            ulong oldF = fMap.Single().DiskBytenr;
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: true, out var s1));
            Ok(fs.Sync());
            Ok(fs.Write(f, 0, Data(), out _));
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s2", readOnly: true, out var s2));
            Ok(fs.Sync());
            Ok(fs.Sync()); // sv has a snapshot since: its ORIGIN_DROP of old f is written
            Assert.True(HasItem(fs, oldF, Reservoir.Format.KeyTypes.OriginDrop, Id(sv)), "no ORIGIN_DROP for old f: the case is not set up");
            Ok(fs.Write(h, 0, Data(), out _));
            Ok(fs.Lookup(s1.Ino, "k", out var s1k));
            ulong tk = CreateFile(fs, t.Ino, "k");
            Ok(fs.CloneRange(s1k.Ino, 0, tk, 0, 0));
            Ok(fs.Sync());
            Ok(fs.Write(tk, 0, Data(), out _));
            Ok(fs.Unlink(sv.Ino, "k"));
            Ok(fs.Sync());
            // sv: new f (s2 shares it), new h alone. s1: old f alone, old h with s2, k alone.
            // s2: new f, old h, k (all shared). t: its new k alone.
            Assert.Equal((2 * F, F), Numbers(fs, sv));
            Assert.Equal((3 * F, F), Numbers(fs, s1));
            Assert.Equal((3 * F, 0UL), Numbers(fs, s2));
            Assert.Equal((F, F), Numbers(fs, t));

            Ok(fs.Lookup(s1.Ino, "f", out var s1f));
            EarlyStep(fs, () => Ok(fs.CloneRange(s1f.Ino, 0, CreateFile(fs, sv.Ino, "f.restored"), 0, 0)), "sv taking old f back");
            Assert.False(HasItem(fs, oldF, Reservoir.Format.KeyTypes.OriginDrop, Id(sv)), "sv took old f back and kept its ORIGIN_DROP");
            Assert.Equal((3 * F, F), Numbers(fs, sv));    // old f shared with s1 now
            Assert.Equal((3 * F, 0UL), Numbers(fs, s1));  // old f no longer alone, k with s2
            Ok(fs.Lookup(s1.Ino, "h", out var s1h));
            EarlyStep(fs, () => Ok(fs.CloneRange(s1h.Ino, 0, CreateFile(fs, sv.Ino, "h.restored"), 0, 0)), "sv taking old h back");
            Assert.Equal((4 * F, F), Numbers(fs, sv));    // old h shared with s1 and s2; new h alone
            Assert.Equal((3 * F, 0UL), Numbers(fs, s1));
            EarlyStep(fs, () => Ok(fs.CloneRange(s1k.Ino, 0, CreateFile(fs, t.Ino, "k.restored"), 0, 0)), "t taking k back");
            Assert.Equal((2 * F, F), Numbers(fs, t));     // k shared with s1 and s2
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s3", readOnly: true, out var s3));
            Ok(fs.CreateSnapshot(t.Ino, Root, "t2", readOnly: true, out var t2));
            Ok(fs.Sync());
            Assert.Equal((4 * F, 0UL), Numbers(fs, s3));
            Assert.Equal((2 * F, 0UL), Numbers(fs, t2));
            Assert.Equal((4 * F, 0UL), Numbers(fs, sv));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// The groups of level 1 and above when a subvolume lets go of extents, worked out early
    /// (docs/SNAPSHOTS.md §3): sv has f (before both snapshots) and g (written after s1, so only
    /// s2 has it), and rewrites both. A = {s1, s2} holds f and g alone from then on (for f two
    /// referrers stay and the worker asks whether anyone outside A has it; for g the one
    /// referrer left is known); B = {sv} stops referencing them; C = {sv, s1} stops referencing
    /// g but still references f (s1 has it) and never held either alone (s2). Every number is
    /// worked out by hand, the commit takes the answers with nothing left to it, and a recount
    /// agrees.
    /// </summary>
    [Fact]
    public void GroupsAboveLevel0AreWorkedOutEarlyWhenASubvolumeLetsGo()
    {
        const ulong F = 64 << 10;
        var dev = NewDevice(64UL << 20);
        var data = new byte[F];
        new Random(1).NextBytes(data);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        ulong f = CreateFile(fs, sv.Ino, "f", data);
        Ok(fs.Sync());
        Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: true, out var s1));
        ulong g = CreateFile(fs, sv.Ino, "g", data);
        Ok(fs.Sync());
        Ok(fs.CreateSnapshot(sv.Ino, Root, "s2", readOnly: true, out var s2));
        ulong a = QgroupId.Of(1, 1), b = QgroupId.Of(1, 2), c = QgroupId.Of(1, 3);
        foreach (var q in (ulong[])[a, b, c]) Ok(fs.CreateQgroup(q));
        foreach (var (child, parent) in (ValueTuple<InodeAttr, ulong>[])[(s1, a), (s2, a), (sv, b), (sv, c), (s1, c)])
            Ok(fs.AssignQgroup(QgroupId.Of(0, Id(child)), parent));
        Ok(fs.Sync());
        (ulong, ulong) Numbers(ulong id) { var x = fs.Qgroups().Single(q => q.Id == id); return (x.Referenced, x.Exclusive); }
        Assert.Equal((2 * F, 0UL), Numbers(a));
        Assert.Equal((2 * F, 0UL), Numbers(b));
        Assert.Equal((2 * F, 0UL), Numbers(c));
        long taken = fs.Fs.Stats.EarlyTaken, left = fs.Fs.Stats.EarlyLeftToCommit, groupAnswers = fs.Fs.Stats.EarlyGroupAnswers;

        data[0] ^= 1;
        Ok(fs.Write(f, 0, data, out _));
        Ok(fs.Write(g, 0, data, out _));
        Ok(fs.Fsync(f));
        Ok(fs.Fsync(g));
        fs.Fs.DrainEarlyAccounting();
        Ok(fs.Sync());
        Assert.Equal(left, fs.Fs.Stats.EarlyLeftToCommit); // nothing left to the commit
        Assert.True(fs.Fs.Stats.EarlyTaken >= taken + 4, "the commit took fewer than the four answers (two written, two let go of)");
        Assert.Equal(groupAnswers + 2, fs.Fs.Stats.EarlyGroupAnswers);
        Assert.Equal((2 * F, 2 * F), Numbers(QgroupId.Of(0, Id(sv))));
        Assert.Equal((F, 0UL), Numbers(QgroupId.Of(0, Id(s1))));
        Assert.Equal((2 * F, F), Numbers(QgroupId.Of(0, Id(s2))));
        Assert.Equal((2 * F, 2 * F), Numbers(a)); // f and g, alone
        Assert.Equal((2 * F, 2 * F), Numbers(b)); // the new f and g
        Assert.Equal((3 * F, 2 * F), Numbers(c)); // the new ones, and the old f (s2 has it too)
        Ok(fs.RescanQuota(out int corrected));
        Assert.Equal(0, corrected);
    }

    /// <summary>
    /// The groups of level 1 and above when a subvolume takes extents by a clone, worked out
    /// early (docs/SNAPSHOTS.md §3): sv writes f, s1 and s2 are taken, sv rewrites f (s1 and s2
    /// keep the old f, e), and u writes g alone. Groups A = {s1, s2}, B = {t}, C = {sv, t},
    /// D = {u}, E = {u, t}. The tenant t clones e from s1 (two referrers stay, neither t's
    /// fellow member: the worker asks): A no longer holds e alone (t is outside it), B and C
    /// start referencing it (no other member has it: sv let go). Then t clones g from u (its
    /// one referrer known): B references it, D no longer holds it alone, E held it alone before
    /// (u) and still does (u and t). Every number worked out by hand, each step taken from the
    /// early answers with nothing left to the commit, and a recount agrees.
    /// </summary>
    [Fact]
    public void GroupsAboveLevel0AreWorkedOutEarlyWhenASubvolumeTakesAnExtentByAClone()
    {
        const ulong F = 64 << 10;
        var dev = NewDevice(64UL << 20);
        var data = new byte[F];
        new Random(6).NextBytes(data);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        Ok(fs.CreateSubvolume(Root, "t", 0, 0, out var t));
        Ok(fs.CreateSubvolume(Root, "u", 0, 0, out var u));
        ulong f = CreateFile(fs, sv.Ino, "f", data);
        Ok(fs.Sync());
        Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: true, out var s1));
        Ok(fs.CreateSnapshot(sv.Ino, Root, "s2", readOnly: true, out var s2));
        Ok(fs.Sync());
        data[0] ^= 1;
        Ok(fs.Write(f, 0, data, out _));
        data[1] ^= 1;
        ulong g = CreateFile(fs, u.Ino, "g", data);
        Ok(fs.Sync());
        ulong a = QgroupId.Of(1, 1), b = QgroupId.Of(1, 2), c = QgroupId.Of(1, 3), d = QgroupId.Of(1, 4), e = QgroupId.Of(1, 5);
        foreach (var q in (ulong[])[a, b, c, d, e]) Ok(fs.CreateQgroup(q));
        foreach (var (child, parent) in (ValueTuple<InodeAttr, ulong>[])[(s1, a), (s2, a), (t, b), (sv, c), (t, c), (u, d), (u, e), (t, e)])
            Ok(fs.AssignQgroup(QgroupId.Of(0, Id(child)), parent));
        Ok(fs.Sync());
        (ulong, ulong) Numbers(ulong id) { var x = fs.Qgroups().Single(q => q.Id == id); return (x.Referenced, x.Exclusive); }
        Assert.Equal((F, F), Numbers(a));       // e, alone
        Assert.Equal((0UL, 0UL), Numbers(b));
        Assert.Equal((F, F), Numbers(c));       // the new f
        Assert.Equal((F, F), Numbers(d));       // g
        Assert.Equal((F, F), Numbers(e));
        long cloneAnswers = fs.Fs.Stats.EarlyGroupCloneAnswers;

        Ok(fs.Lookup(s1.Ino, "f", out var s1f));
        EarlyStep(fs, () => Ok(fs.CloneRange(s1f.Ino, 0, CreateFile(fs, t.Ino, "e"), 0, 0)), "t's clone of e");
        Assert.Equal((F, 0UL), Numbers(a));     // e shared with t, outside A
        Assert.Equal((F, 0UL), Numbers(b));     // e, shared with s1 and s2
        Assert.Equal((2 * F, F), Numbers(c));   // the new f alone, e shared
        Assert.Equal((F, 0UL), Numbers(QgroupId.Of(0, Id(t))));
        Assert.Equal((F, 0UL), Numbers(QgroupId.Of(0, Id(s1))));

        EarlyStep(fs, () => Ok(fs.CloneRange(g, 0, CreateFile(fs, t.Ino, "g"), 0, 0)), "t's clone of g");
        Assert.Equal((2 * F, 0UL), Numbers(b)); // g too, shared with u
        Assert.Equal((3 * F, F), Numbers(c));   // g shared with u, outside C
        Assert.Equal((F, 0UL), Numbers(d));     // g shared with t, outside D
        Assert.Equal((2 * F, F), Numbers(e));   // g, held by u and t, both in E; e shared
        Assert.Equal((F, 0UL), Numbers(QgroupId.Of(0, Id(u))));
        Assert.Equal(cloneAnswers + 2, fs.Fs.Stats.EarlyGroupCloneAnswers);
    }

    /// <summary>
    /// A membership or group changing between the early answers and the commit drops them (the
    /// stamp's memberships version), even when groups of level 1 and above existed throughout:
    /// the commit then works out every extent itself.
    /// </summary>
    [Fact]
    public void AGroupChangingBeforeTheCommitLeavesEveryExtentToIt()
    {
        var dev = NewDevice(64UL << 20);
        var data = new byte[64 << 10];
        new Random(1).NextBytes(data);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        ulong f = CreateFile(fs, sv.Ino, "f", data);
        Ok(fs.CreateQgroup(QgroupId.Of(1, 1)));
        Ok(fs.Sync());
        Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: true, out _));
        Ok(fs.Sync());
        long taken = fs.Fs.Stats.EarlyTaken, groupAnswers = fs.Fs.Stats.EarlyGroupAnswers;
        data[0] ^= 1;
        Ok(fs.Write(f, 0, data, out _));
        Ok(fs.Fsync(f));
        fs.Fs.DrainEarlyAccounting();
        Assert.Equal(groupAnswers + 1, fs.Fs.Stats.EarlyGroupAnswers); // the old extent, answered
        Ok(fs.CreateQgroup(QgroupId.Of(1, 2)));                        // and its commit comes after a new group
        Assert.Equal(taken, fs.Fs.Stats.EarlyTaken); // it took none of the answers found before
        Ok(fs.RescanQuota(out int corrected));
        Assert.Equal(0, corrected);
    }

    /// <summary>
    /// A group of the first half of the snapshots (both sides of it too large to copy, the
    /// extent's candidates too many to hold: with ReferrerEntryAfter 4, over 7 and 6), when
    /// the source lets go: "does anyone outside the group have it?" is answered from the first
    /// candidates on the outside, in the order taken (those inside passed over by membership,
    /// without a lookup). The group never held the extents
    /// alone (the second half has them), so its numbers do not move; nothing is left to the
    /// commit, and a recount agrees. Fails if the walk over the candidates is not made (the
    /// extents go to the commit) or answers no.
    /// </summary>
    [Fact]
    public void AGroupOfHalfTheSnapshotsIsAnsweredFromTheFirstCandidatesOnItsSide()
    {
        const ulong F = 16 << 10;
        var dev = NewDevice(64UL << 20);
        var data = new byte[F];
        new Random(1).NextBytes(data);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 4 });
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
        var files = Enumerable.Range(0, 6).Select(i => CreateFile(fs, sv.Ino, $"f{i}", data)).ToList();
        Ok(fs.Sync());
        ulong half = QgroupId.Of(1, 1);
        Ok(fs.CreateQgroup(half));
        for (int i = 0; i < 20; i++)
        {
            Ok(fs.CreateSnapshot(sv.Ino, Root, $"s{i}", readOnly: true, out var snap));
            if (i < 10) Ok(fs.AssignQgroup(QgroupId.Of(0, Reservoir.Engine.Inodes.NodeIds.Decode(snap.Ino).TreeId), half));
        }
        Ok(fs.Sync());
        (ulong, ulong) Numbers(ulong id) { var x = fs.Qgroups().Single(q => q.Id == id); return (x.Referenced, x.Exclusive); }
        Assert.Equal((6 * F, 0UL), Numbers(half));
        long left = fs.Fs.Stats.EarlyLeftToCommit, searches = fs.Fs.Stats.EarlyGroupSearches, probes = fs.Fs.Stats.EarlyProbes;
        data[0] ^= 1;
        foreach (var f in files) Ok(fs.Write(f, 0, data, out _));
        foreach (var f in files) Ok(fs.Fsync(f));
        fs.Fs.DrainEarlyAccounting();
        Ok(fs.Sync());
        Assert.Equal(left, fs.Fs.Stats.EarlyLeftToCommit); // nothing left to the commit
        Assert.Equal(searches + 6, fs.Fs.Stats.EarlyGroupSearches);
        Assert.Equal((6 * F, 0UL), Numbers(half));
        Ok(fs.RescanQuota(out int corrected));
        Assert.Equal(0, corrected);
        // The candidates inside the group are passed over by their membership, not looked up:
        // the two first referrers found and one outside, 3 lookups an extent.
        Assert.Equal(6 * 3, fs.Fs.Stats.EarlyProbes - probes);
    }
}
