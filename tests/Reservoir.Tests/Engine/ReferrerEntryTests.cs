using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// The cost bound of docs/SNAPSHOTS.md §3 for many writable snapshots letting go of the same
/// extent: a golden subvolume, N writable snapshots of it, and each snapshot in turn rewrites
/// the file, one commit each. Without referrer entries the k-th commit looks up the k−1
/// snapshots that already let go (about N²/2 lookups in all); with them, the search that
/// first passes over 32 such snapshots gives the extent an entry (a cursor over subvolume ids
/// and the referrers known), and later commits move its cursor on by the one snapshot they
/// need. Counted in EXTENT_OWNER_REF lookups and ids kept, not time, so the bounds are exact
/// on any machine; the numbers are checked against fsck's recount along the way and at the end.
/// </summary>
public class ReferrerEntryTests(ITestOutputHelper log)
{
    private const ulong Root = Filesystem.RootIno;
    private const int Snapshots = 150;
    private const ulong FileBytes = 64 << 10;

    /// <summary>Quotas on, a golden subvolume filled by <paramref name="fill"/> (given its
    /// directory), then <paramref name="count"/> writable snapshots of it, committed; returns
    /// the golden subvolume's id and the snapshots' root directories.</summary>
    private static (ulong GoldenId, List<ulong> Snaps) GoldenAndSnapshots(Filesystem fs, int count, Action<ulong> fill)
    {
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "golden", 0, 0, out var golden));
        fill(golden.Ino);
        Ok(fs.Sync());
        var snaps = new List<ulong>();
        for (int i = 0; i < count; i++)
        {
            Ok(fs.CreateSnapshot(golden.Ino, Root, $"s{i}", readOnly: false, out var s));
            snaps.Add(s.Ino);
        }
        Ok(fs.Sync());
        return (Reservoir.Engine.Inodes.NodeIds.Decode(golden.Ino).TreeId, snaps);
    }

    /// <summary>Each snapshot in turn runs <paramref name="change"/> on its root directory and
    /// commits (fsck's recount every 50 and at the end); <paramref name="after"/> runs after each commit.</summary>
    private static void InTurn(Filesystem fs, IBlockDevice dev, List<ulong> snaps, Action<int, ulong> change, Action? after = null)
    {
        for (int i = 0; i < snaps.Count; i++)
        {
            change(i, snaps[i]);
            Ok(fs.Sync());
            after?.Invoke();
            if (i % 50 == 49) FsckAssert.Clean(dev);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>Each snapshot in turn rewrites the golden file <c>f</c>.</summary>
    private static Action<int, ulong> Rewrite(Filesystem fs, byte[] data) => (i, snap) =>
    {
        Ok(fs.Lookup(snap, "f", out var f));
        data[0] = (byte)(i + 1);
        Ok(fs.Write(f.Ino, 0, data, out _));
    };

    private static void AssertGroup(Filesystem fs, ulong subvolume, ulong referenced, ulong exclusive)
    {
        var g = fs.Qgroups().Single(q => q.Id == QgroupId.Of(0, subvolume));
        Assert.Equal((referenced, exclusive), (g.Referenced, g.Exclusive));
    }

    private (long Probes, long EntriesKept) RewriteInEverySnapshot(int referrerEntryAfter)
    {
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = referrerEntryAfter });
        var data = new byte[FileBytes];
        new Random(1).NextBytes(data);
        var (goldenId, snaps) = GoldenAndSnapshots(fs, Snapshots, dir => CreateFile(fs, dir, "f", data));
        long probes0 = fs.Fs.Stats.OwnerRefProbes;
        InTurn(fs, dev, snaps, Rewrite(fs, data));
        long probes = fs.Fs.Stats.OwnerRefProbes - probes0;
        // The golden extent is the golden subvolume's alone now; each snapshot holds its own.
        AssertGroup(fs, goldenId, FileBytes, FileBytes);
        foreach (var s in snaps) AssertGroup(fs, Reservoir.Engine.Inodes.NodeIds.Decode(s).TreeId, FileBytes, FileBytes);
        return (probes, fs.Fs.Stats.ReferrerEntriesKept);
    }

    [Fact]
    public void SnapshotsLettingGoOfTheSameExtentCostLinearLookups()
    {
        var (with, kept) = RewriteInEverySnapshot(referrerEntryAfter: 32);
        var (without, _) = RewriteInEverySnapshot(referrerEntryAfter: int.MaxValue);
        log.WriteLine($"{Snapshots} snapshots each rewriting the golden file: {with} lookups with referrer entries ({kept} kept), {without} without");
        // Without: the k-th commit passes over the k−1 that let go, then finds the golden
        // subvolume and one more snapshot.
        Assert.True(without >= (long)Snapshots * (Snapshots - 1) / 2, $"{without} lookups without referrer entries: the workload no longer shows the quadratic case");
        // With: at most 32 passed over (and two referrers found) per search until the extent
        // gets an entry (33 searches), whose walk starts again from the golden subvolume's id
        // (33 let go, the golden one, the next snapshot); then each commit takes the golden
        // subvolume from the entry and looks up the one next snapshot.
        Assert.Equal(1, kept);
        Assert.True(with <= 33 * 34 + 35 + Snapshots, $"{with} lookups with referrer entries for {Snapshots} snapshots");
    }

    /// <summary>
    /// The same with many extents, where what is kept per extent matters: 40 files in the
    /// golden subvolume, and each of the 150 snapshots in turn deletes all of them. An entry
    /// keeps a cursor and the referrers its searches needed (the golden subvolume and the
    /// next snapshot), never every snapshot that still has the extent: keeping each extent's
    /// whole set (about 117 ids each here) made N snapshots × F extents cost N·F ids, past the
    /// bound at 10,000 snapshots of a golden image of a few hundred extents.
    /// </summary>
    [Fact]
    public void ManyExtentsLetGoOfByManySnapshotsKeepFewReferrersEach()
    {
        const int Files = 40;
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        var data = new byte[4096];
        var (goldenId, snaps) = GoldenAndSnapshots(fs, Snapshots, dir =>
        {
            for (int f = 0; f < Files; f++)
            {
                data[0] = (byte)f;
                CreateFile(fs, dir, $"f{f}", data);
            }
        });
        long probes0 = fs.Fs.Stats.OwnerRefProbes, most = 0;
        InTurn(fs, dev, snaps, (_, snap) =>
        {
            for (int f = 0; f < Files; f++) Ok(fs.Unlink(snap, $"f{f}"));
        }, () => most = Math.Max(most, fs.Fs.ReferrerEntries.Ids));
        long probes = fs.Fs.Stats.OwnerRefProbes - probes0;
        log.WriteLine($"{Snapshots} snapshots each deleting {Files} files: {probes} lookups, at most {most} referrers kept, {fs.Fs.ReferrerEntries.Count} entries");
        AssertGroup(fs, goldenId, Files * 4096UL, Files * 4096UL);
        Assert.Equal(Files, fs.Fs.ReferrerEntries.Count);
        // Two per extent at most while a commit runs (the golden subvolume and the next
        // snapshot), where whole sets held every snapshot not yet done.
        Assert.True(most <= 2 * Files, $"{most} referrers kept for {Files} extents");
        Assert.True(probes <= Files * (33 * 34 + 35 + Snapshots), $"{probes} lookups");
    }

    /// <summary>
    /// An entry's cursor steps only over ids that can reference the extent (its origins and
    /// the snapshots), not over every id up to the highest: here 300 subvolumes made and deleted
    /// between the golden subvolume and its 40 snapshots, and each snapshot in turn rewrites the
    /// golden file with an entry for every extent searched. Walking every id would pass the 300
    /// at the first search; the walk steps over the golden subvolume and the snapshots, about
    /// one per commit.
    /// </summary>
    [Fact]
    public void AnEntrysCursorStepsOverIdsThatCannotReferenceTheExtent()
    {
        const int Gone = 300, Snaps = 40;
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 0 });
        var data = new byte[FileBytes];
        var (goldenId, snaps) = GoldenAndSnapshots(fs, Snaps, dir =>
        {
            CreateFile(fs, dir, "f", data);
            for (int i = 0; i < Gone; i++) Ok(fs.CreateSubvolume(Root, $"gone{i}", 0, 0, out _));
            for (int i = 0; i < Gone; i++) Ok(fs.DeleteSubvolume(Root, $"gone{i}"));
            Ok(fs.SyncSubvolumeDeletions()); // the cleaner commits while it drops them: done before fsck looks
        });
        long walked0 = fs.Fs.Stats.EntryIdsWalked;
        InTurn(fs, dev, snaps, Rewrite(fs, data));
        long walked = fs.Fs.Stats.EntryIdsWalked - walked0;
        log.WriteLine($"{Snaps} snapshots rewriting the golden file past {Gone} deleted ids: {walked} ids walked");
        AssertGroup(fs, goldenId, FileBytes, FileBytes);
        Assert.True(walked > 0, "no entry walked: the test would not exercise them");
        // The golden extent: the golden subvolume, then each snapshot once; each new extent
        // (written by one snapshot, with no snapshot of it) needs no search.
        Assert.True(walked <= 2 * Snaps + 2, $"{walked} ids walked for {Snaps} snapshots");
    }

    /// <summary>Quotas on, a golden subvolume with <paramref name="files"/> files of 4 KiB and
    /// <paramref name="count"/> writable snapshots of it, each assigned by hand to one of
    /// <paramref name="tenants"/> groups 1/1, 1/2, … in turn (interleaved, as tenants' clones
    /// are made in no order); returns the golden subvolume's id, the snapshots' root
    /// directories and subvolume ids.</summary>
    private static (ulong GoldenId, List<ulong> Snaps, List<ulong> Ids) TenantsOfClones(Filesystem fs, int count, int files, int tenants)
    {
        var data = new byte[4096];
        var (goldenId, snaps) = GoldenAndSnapshots(fs, count, dir =>
        {
            for (int f = 0; f < files; f++)
            {
                data[0] = (byte)f;
                CreateFile(fs, dir, $"f{f}", data);
            }
        });
        var ids = snaps.Select(s => Reservoir.Engine.Inodes.NodeIds.Decode(s).TreeId).ToList();
        for (int t = 1; t <= tenants; t++) Ok(fs.CreateQgroup(QgroupId.Of(1, (ulong)t)));
        for (int i = 0; i < count; i++) Ok(fs.AssignQgroup(QgroupId.Of(0, ids[i]), Tenant(i, tenants)));
        Ok(fs.Sync());
        return (goldenId, snaps, ids);
    }

    private static ulong Tenant(int snapshot, int tenants) => QgroupId.Of(1, (ulong)(snapshot % tenants + 1));

    /// <summary>
    /// Tenants' groups of clones of a golden image (docs/SNAPSHOTS.md §3, "Cost"): 240 writable
    /// snapshots in three interleaved groups, each in turn deleting the two golden files. The
    /// snapshot letting go belongs to a group that the two referrers found (the golden
    /// subvolume and the next snapshot, of another group) are not in, so the commit asks
    /// whether another member still has each extent. Walked in the group's set order, every
    /// member that already let go cost a lookup, every commit: about N²/(2·groups) in all,
    /// 10,000 here. Each extent's side of the group keeps a cursor over the members' ids, so
    /// each member is looked at once per extent and group side over all commits.
    /// </summary>
    [Fact]
    public void TenantGroupsOfClonesLettingGoInTurnCostLinearLookups()
    {
        const int Count = 240, Files = 2, Tenants = 3;
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        var (goldenId, snaps, _) = TenantsOfClones(fs, Count, Files, Tenants);
        var st = fs.Fs.Stats;
        long probes0 = st.OwnerRefProbes, walked0 = st.GroupCandidatesWalked;
        InTurn(fs, dev, snaps, (_, snap) =>
        {
            for (int f = 0; f < Files; f++) Ok(fs.Unlink(snap, $"f{f}"));
        });
        long probes = st.OwnerRefProbes - probes0, walked = st.GroupCandidatesWalked - walked0;
        log.WriteLine($"{Count} snapshots in {Tenants} groups each deleting {Files} files: {probes} lookups, {walked} group ids walked, {st.GroupSidesStarted} group sides");
        AssertGroup(fs, goldenId, Files * 4096UL, Files * 4096UL);
        for (int t = 1; t <= Tenants; t++)
        {
            var g = fs.Qgroups().Single(q => q.Id == QgroupId.Of(1, (ulong)t));
            Assert.Equal((0UL, 0UL), (g.Referenced, g.Exclusive));
        }
        Assert.True(st.GroupSidesStarted > 0, "no group side was made: the test would not exercise them");
        // Per extent: the level-0 search (up to 32 passed over before its entry, then about
        // two a commit), and each group's members once.
        Assert.True(probes <= Files * (33 * 34 + 3L * Count + Tenants * (Count / Tenants + 1)), $"{probes} lookups");
    }

    /// <summary>
    /// The group sides stay right whatever the order (fsck's recount every ten commits): the
    /// same tenants' clones let go of the golden files in a random order, some take a golden
    /// file back by a clone (a transition that joins a side), and halfway a snapshot that still
    /// has the files moves by hand from one group to another (its id is below cursors that
    /// walked past it: the sides of that epoch must be started again).
    /// </summary>
    [Theory]
    [InlineData(0, 1)]
    [InlineData(0, 2)]
    [InlineData(4, 3)]
    public void TenantGroupSidesAgreeWithTheRecountInAnyOrder(int referrerEntryAfter, int seed)
    {
        const int Count = 90, Files = 3, Tenants = 3;
        var rng = new Random(seed);
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = referrerEntryAfter });
        var (goldenId, snaps, ids) = TenantsOfClones(fs, Count, Files, Tenants);
        var order = Enumerable.Range(0, Count).OrderBy(_ => rng.Next()).ToList();
        // The lowest snapshot lets go last; it moves group halfway.
        order.Remove(0);
        order.Add(0);
        var done = new List<int>();
        int step = 0;
        foreach (int i in order)
        {
            for (int f = 0; f < Files; f++) Ok(fs.Unlink(snaps[i], $"f{f}"));
            if (done.Count > 0 && rng.Next(4) == 0)
            {
                // One that let go takes a golden file back, by a clone from the golden subvolume.
                int back = done[rng.Next(done.Count)];
                Ok(fs.Lookup(Root, "golden", out var golden));
                Ok(fs.Lookup(golden.Ino, $"f{rng.Next(Files)}", out var src));
                ulong dst = CreateFile(fs, snaps[back], $"back{step}");
                Ok(fs.CloneRange(src.Ino, 0, dst, 0, 0));
            }
            done.Add(i);
            if (++step == Count / 2)
            {
                Ok(fs.RemoveQgroupRelation(QgroupId.Of(0, ids[0]), Tenant(0, Tenants)));
                Ok(fs.AssignQgroup(QgroupId.Of(0, ids[0]), Tenant(1, Tenants)));
            }
            Ok(fs.Sync());
            if (step % 10 == 0) FsckAssert.Clean(dev);
        }
        FsckAssert.Clean(dev);
        log.WriteLine($"seed {seed}: {fs.Fs.Stats.GroupSidesStarted} group sides started, {fs.Fs.Stats.GroupCandidatesWalked} ids walked");
        Assert.True(fs.Fs.Stats.GroupSidesStarted > 0, "no group side was made: the test would not exercise them");
        Assert.Equal(Files * 4096UL, fs.Qgroups().Single(q => q.Id == QgroupId.Of(0, goldenId)).Referenced);
    }

    /// <summary>A golden subvolume with one file of 4 KiB, eight writable snapshots s0…s7, the
    /// even ones in group 1/1 and the odd ones in 1/2, with an entry for every extent searched
    /// (so each commit that lets go asks the group sides: the referrers found, the golden
    /// subvolume and s1, are in neither or the other group). s0 and s2 let go of the golden
    /// file's extent (the cursor of group 1/1's side moves to s4), then <paramref name="between"/>
    /// runs (given the golden subvolume's directory, the snapshots' directories and ids) and
    /// commits (and, with <paramref name="remount"/>, the image is mounted again: the entry and
    /// its sides come back from their item), then s4 and s6 let go. fsck's recount must agree,
    /// and group 1/1 must still reference the extent (<paramref name="through"/> still has it).</summary>
    private static void EvenAndOdd(string through, Action<Filesystem, ulong, List<ulong>, List<ulong>> between, bool remount = false)
    {
        var dev = NewDevice(128UL << 20);
        var options = new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 0 };
        var fs = Mount(dev, options);
        try
        {
            var (_, snaps, ids) = TenantsOfClones(fs, 8, 1, 2);
            Ok(fs.Lookup(Root, "golden", out var golden));
            void LetGo(int i)
            {
                Ok(fs.Unlink(snaps[i], "f0"));
                Ok(fs.Sync());
            }
            LetGo(0);
            LetGo(2);
            long sides = fs.Fs.Stats.GroupSidesStarted;
            between(fs, golden.Ino, snaps, ids);
            Ok(fs.Sync());
            if (remount)
            {
                fs.Dispose();
                fs = Mount(dev, options);
            }
            LetGo(4);
            LetGo(6);
            FsckAssert.Clean(dev);
            Assert.True(sides + fs.Fs.Stats.GroupSidesStarted > 0, "no group side was made: the test would not exercise them");
            if (remount) Assert.True(fs.Fs.Stats.ReferrerEntriesLoaded > 0, "no entry was read back: the test would not exercise their items");
            Assert.True(fs.Qgroups().Single(q => q.Id == QgroupId.Of(1, 1)).Referenced == 4096UL, $"group 1/1 no longer references the extent {through} has");
        }
        finally { fs.Dispose(); }
    }

    /// <summary>A member that took the extent back by a clone (s0, below the cursor, where no
    /// walk would look again) joins the known ones of the side.</summary>
    [Fact]
    public void AGroupSideHearsOfAMemberThatTookTheExtentBack() => EvenAndOdd("s0", (fs, golden, snaps, _) =>
    {
        Ok(fs.Lookup(golden, "f0", out var src));
        Ok(fs.CloneRange(src.Ino, 0, CreateFile(fs, snaps[0], "back"), 0, 0));
    });

    /// <summary>A membership changed by hand starts the group sides again: s3, which still has
    /// the extent, moves from 1/2 to 1/1, below the cursor.</summary>
    [Fact]
    public void AGroupSideStartsAgainWhenAMembershipIsChangedByHand() => EvenAndOdd("s3", MoveS3, remount: false);

    /// <summary>The same across a mount: the membership change works s3's numbers out from its
    /// extents, which gives the golden extent a fresh entry; its sides, made in the epoch before
    /// the change, are not written (only sides of the current epoch are), and the entry read back
    /// by the next mount, whose epoch QGROUP_STATUS gives, must still find s3 in group 1/1 when
    /// s4 and s6 let go.</summary>
    [Fact]
    public void AMemberMovedByHandIsStillFoundAfterAMount() => EvenAndOdd("s3", MoveS3, remount: true);

    /// <summary>
    /// A group side read back across a mount after a group joined a group. Group 2/1 holds 1/1
    /// (the golden subvolume, s0, s1); 1/2 holds s2; s3, s4, s5 are in no group. As s3 and s4
    /// let go of the golden file, the commit asks whether anyone outside 2/1 still has it (the
    /// two referrers found are members): s2 does, and 2/1's side of the others knows it. Then
    /// 1/2 joins 2/1 (a new membership epoch: the others' side now names a member) and the image
    /// is mounted again. When s5 lets go nobody outside 2/1 has the extent: 2/1 holds it
    /// exclusively, which only a side started again finds (the side read back names its epoch,
    /// the mount's epoch is the later one from QGROUP_STATUS). fsck's recount checks.
    /// </summary>
    [Fact]
    public void AGroupSideReadBackAfterAGroupJoinedAGroupStartsAgain()
    {
        var dev = NewDevice(128UL << 20);
        var options = new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 0 };
        var fs = Mount(dev, options);
        try
        {
            var (goldenId, snaps) = GoldenAndSnapshots(fs, 6, dir => CreateFile(fs, dir, "f0", new byte[4096]));
            var ids = snaps.Select(sn => Reservoir.Engine.Inodes.NodeIds.Decode(sn).TreeId).ToList();
            ulong g11 = QgroupId.Of(1, 1), g12 = QgroupId.Of(1, 2), g21 = QgroupId.Of(2, 1);
            foreach (var g in new[] { g11, g12, g21 }) Ok(fs.CreateQgroup(g));
            Ok(fs.AssignQgroup(g11, g21));
            foreach (var id in new[] { goldenId, ids[0], ids[1] }) Ok(fs.AssignQgroup(QgroupId.Of(0, id), g11));
            Ok(fs.AssignQgroup(QgroupId.Of(0, ids[2]), g12));
            Ok(fs.Sync());
            void LetGo(int i)
            {
                Ok(fs.Unlink(snaps[i], "f0"));
                Ok(fs.Sync());
            }
            LetGo(3);
            LetGo(4);
            Assert.True(fs.Fs.Stats.GroupSidesStarted > 0, "no group side was made: the test would not exercise them");
            Ok(fs.AssignQgroup(g12, g21));
            Ok(fs.Sync());
            fs.Dispose();
            fs = Mount(dev, options);
            LetGo(5);
            Assert.True(fs.Fs.Stats.ReferrerEntriesLoaded > 0, "no entry was read back: the test would not exercise their items");
            FsckAssert.Clean(dev);
            var top = fs.Qgroups().Single(q => q.Id == g21);
            Assert.Equal((4096UL, 4096UL), (top.Referenced, top.Exclusive));
        }
        finally { fs.Dispose(); }
    }

    private static void MoveS3(Filesystem fs, ulong golden, List<ulong> snaps, List<ulong> ids)
    {
        Ok(fs.RemoveQgroupRelation(QgroupId.Of(0, ids[3]), QgroupId.Of(1, 2)));
        Ok(fs.AssignQgroup(QgroupId.Of(0, ids[3]), QgroupId.Of(1, 1)));
    }

    /// <summary>
    /// The entries are written with the commits that change them (REFERRER_ENTRY items), so a
    /// new mount goes on from where the searches got to: tenants' clones letting go of the
    /// golden files in turn, unmounted halfway. In memory only, the first commit after the mount
    /// walked the ids of every snapshot that had let go (about Count/2 lookups per file); from
    /// the items, a few. fsck checks every item against its recount (no referrer below a
    /// cursor missing, none listed that is not one) before and after.
    /// </summary>
    [Fact]
    public void EntriesOutliveTheMount()
    {
        const int Count = 120, Files = 4, Tenants = 3;
        var dev = NewDevice(256UL << 20);
        var options = new MountOptions { CommitIntervalMs = 0 };
        var fs = Mount(dev, options);
        try
        {
            var (goldenId, snaps, _) = TenantsOfClones(fs, Count, Files, Tenants);
            for (int i = 0; i < Count / 2; i++)
            {
                for (int f = 0; f < Files; f++) Ok(fs.Unlink(snaps[i], $"f{f}"));
                Ok(fs.Sync());
            }
            Assert.True(fs.Fs.Stats.ReferrerEntriesWritten >= Files, "no entry was written: the test would not exercise them");
            FsckAssert.Clean(dev);
            fs.Dispose();
            fs = Mount(dev, options);
            var st = fs.Fs.Stats;
            for (int f = 0; f < Files; f++) Ok(fs.Unlink(snaps[Count / 2], $"f{f}"));
            Ok(fs.Sync());
            long first = st.OwnerRefProbes;
            log.WriteLine($"first commit after the mount: {first} lookups, {st.ReferrerEntriesLoaded} entries loaded, {st.EntryIdsWalked} ids walked");
            Assert.Equal(Files, st.ReferrerEntriesLoaded);
            Assert.True(first <= Files * 8, $"{first} lookups in the first commit after the mount");
            InTurn(fs, dev, snaps.Skip(Count / 2 + 1).ToList(), (_, snap) =>
            {
                for (int f = 0; f < Files; f++) Ok(fs.Unlink(snap, $"f{f}"));
            });
            AssertGroup(fs, goldenId, Files * 4096UL, Files * 4096UL);
        }
        finally { fs.Dispose(); }
    }

    /// <summary>
    /// A subvolume id handed out while quotas are on is never handed out again, even once its
    /// subvolume is deleted and cleaned away (no ROOT_ITEM left to say it was used) and the image
    /// mounted again: an entry's cursor may have passed that id, and a new snapshot of a
    /// referrer under it would never be looked at. Here every snapshot lets go of the golden
    /// files, so the entries' cursors walk to the highest snapshot, which is then deleted; after
    /// a mount a new snapshot of the golden subvolume must get a higher id, and after one more
    /// mount (the entries still as the first left them) the golden subvolume lets go too: the new
    /// snapshot must be found holding the files, now exclusively. Without the id check, handing
    /// ids out again from the ROOT_ITEMs alone fails fsck's recount (the new snapshot is never
    /// asked).
    /// </summary>
    [Fact]
    public void AnIdHandedOutIsNotHandedOutAgainAfterItsSubvolumeIsGone()
    {
        const int Count = 40, Files = 2;
        var dev = NewDevice(256UL << 20);
        var options = new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 0 };
        var fs = Mount(dev, options);
        try
        {
            var (goldenId, snaps, ids) = TenantsOfClones(fs, Count, Files, tenants: 1);
            InTurn(fs, dev, snaps, (_, snap) =>
            {
                for (int f = 0; f < Files; f++) Ok(fs.Unlink(snap, $"f{f}"));
            });
            ulong highest = ids[^1];
            Ok(fs.DeleteSubvolume(Root, $"s{Count - 1}"));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            FsckAssert.Clean(dev);
            fs.Dispose();
            fs = Mount(dev, options);
            Ok(fs.Lookup(Root, "golden", out var golden));
            Ok(fs.CreateSnapshot(golden.Ino, Root, "late", readOnly: false, out var late));
            ulong lateId = Reservoir.Engine.Inodes.NodeIds.Decode(late.Ino).TreeId;
            Assert.True(lateId > highest, $"id {lateId} handed out again (the highest was {highest})");
            Ok(fs.Sync());
            fs.Dispose();
            fs = Mount(dev, options);
            Ok(fs.Lookup(Root, "golden", out golden));
            for (int f = 0; f < Files; f++) Ok(fs.Unlink(golden.Ino, $"f{f}"));
            Ok(fs.Sync());
            FsckAssert.Clean(dev);
            AssertGroup(fs, lateId, Files * 4096UL, Files * 4096UL);
            AssertGroup(fs, goldenId, 0, 0);
        }
        finally { fs.Dispose(); }
    }

    /// <summary>Turning quotas off deletes every REFERRER_ENTRY item with the other quota items
    /// (nothing would keep them right), and turning them on again starts without any: fsck
    /// reports any left behind.</summary>
    [Fact]
    public void QuotaOffAndOnAgainLeavesNoReferrerEntryItem()
    {
        var dev = NewDevice(128UL << 20);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 0 }))
        {
            var (_, snaps, _) = TenantsOfClones(fs, 12, 2, tenants: 2);
            InTurn(fs, dev, snaps.Take(6).ToList(), (_, snap) =>
            {
                for (int f = 0; f < 2; f++) Ok(fs.Unlink(snap, $"f{f}"));
            });
            Assert.True(ReferrerEntryItems(fs) > 0, "no item was written: the test would not exercise them");
            Ok(fs.DisableQuota());
            Assert.Equal(0, ReferrerEntryItems(fs));
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 0 }))
        {
            Ok(fs.EnableQuota());
            Assert.Equal(0, ReferrerEntryItems(fs));
        }
        FsckAssert.Clean(dev);
    }

    private static int ReferrerEntryItems(Filesystem fs)
    {
        int n = 0;
        var path = new Reservoir.Engine.Tree.TreePath();
        if (fs.Fs.ExtentTree.SeekGE(Reservoir.Format.Key.Min, path))
            do if (path.Key.Type == Reservoir.Format.KeyTypes.ReferrerEntry) n++; while (fs.Fs.ExtentTree.Next(path));
        return n;
    }

    /// <summary>The REFERRER_ENTRY layout of SPEC.md §5.9 read back as written, sides and all,
    /// and an item whose length does not match its counts (cut short, one byte more, a count past
    /// 64, an unknown side flag) refused.</summary>
    [Fact]
    public void AReferrerEntryItemReadsBackAsWrittenAndRefusesWhatDoesNotAddUp()
    {
        ulong[] ids = [256, 300, 301], a = [302], b = [303, 304];
        int size = ReferrerEntryItem.SizeFor(ids.Length) + ReferrerEntryItem.SideSizeFor(a.Length) + ReferrerEntryItem.SideSizeFor(b.Length);
        var buf = new byte[size];
        int at = ReferrerEntryItem.Write(buf, 256, 7, 305, ids, sides: 2);
        at = ReferrerEntryItem.WriteSide(buf, at, QgroupId.Of(1, 1), 3, 303, inside: true, a);
        at = ReferrerEntryItem.WriteSide(buf, at, QgroupId.Of(1, 2), 3, 305, inside: false, b);
        Assert.Equal(size, at);
        // Header: owner, generation, cursor, count, side count, as SPEC.md gives the offsets.
        Assert.Equal(256UL, BitConverter.ToUInt64(buf, 0));
        Assert.Equal(7UL, BitConverter.ToUInt64(buf, 8));
        Assert.Equal(305UL, BitConverter.ToUInt64(buf, 16));
        Assert.Equal((3u, 2u), (BitConverter.ToUInt32(buf, 24), BitConverter.ToUInt32(buf, 28)));
        Assert.True(ReferrerEntryItem.TryRead(buf, out ulong owner, out ulong gen, out ulong cursor, out int count, out int sides));
        Assert.Equal((256UL, 7UL, 305UL, 3, 2), (owner, gen, cursor, count, sides));
        Assert.Equal(ids, Enumerable.Range(0, count).Select(i => ReferrerEntryItem.Id(buf, i)));
        int s1 = ReferrerEntryItem.SizeFor(count);
        Assert.True(ReferrerEntryItem.Side(buf, s1, out ulong g1, out ulong e1, out ulong c1, out uint f1, out int n1, out int s2));
        Assert.Equal((QgroupId.Of(1, 1), 3UL, 303UL, ReferrerEntryItem.SideInside, 1, 302UL), (g1, e1, c1, f1, n1, ReferrerEntryItem.SideId(buf, s1, 0)));
        Assert.True(ReferrerEntryItem.Side(buf, s2, out ulong g2, out _, out _, out uint f2, out int n2, out int end));
        Assert.Equal((QgroupId.Of(1, 2), 0u, 2, 304UL, size), (g2, f2, n2, ReferrerEntryItem.SideId(buf, s2, 1), end));

        Assert.False(ReferrerEntryItem.TryRead(buf.AsSpan(0, size - 8), out _, out _, out _, out _, out _));
        Assert.False(ReferrerEntryItem.TryRead(buf.Concat(new byte[1]).ToArray(), out _, out _, out _, out _, out _));
        var bad = (byte[])buf.Clone();
        BitConverter.TryWriteBytes(bad.AsSpan(24), 65u);
        Assert.False(ReferrerEntryItem.TryRead(bad, out _, out _, out _, out _, out _));
        bad = (byte[])buf.Clone();
        BitConverter.TryWriteBytes(bad.AsSpan(s1 + 24), 2u);
        Assert.False(ReferrerEntryItem.TryRead(bad, out _, out _, out _, out _, out _));
    }

    /// <summary>fsck checks each REFERRER_ENTRY against its recount: one that leaves out a
    /// referrer below its cursor, or lists a subvolume that does not reference the extent, or
    /// names another writer, is reported (the commit would trust it); `quota rescan` drops them
    /// all with its recount.</summary>
    [Fact]
    public void FsckReportsAReferrerEntryThatDisagreesWithTheTrees()
    {
        var dev = NewDevice(128UL << 20);
        ulong bytenr = 0, owner = 0, gen = 0, goldenId;
        List<ulong> ids;
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            (goldenId, _, ids) = TenantsOfClones(fs, 4, 1, tenants: 1);
            var path = new Reservoir.Engine.Tree.TreePath();
            Assert.True(fs.Fs.ExtentTree.SeekGE(Reservoir.Format.Key.Min, path));
            do
            {
                var k = path.Key;
                if (k.Type == Reservoir.Format.KeyTypes.ExtentItem && ExtentItem.TryRead(path.Data, out var ei) && ei.Owner == goldenId)
                    (bytenr, owner, gen) = (k.ObjectId, ei.Owner, ei.Generation);
            } while (fs.Fs.ExtentTree.Next(path));
            Assert.NotEqual(0UL, bytenr);
        }
        FsckAssert.Clean(dev);
        void Put(ulong o, ulong g, ulong cursor, params ulong[] known)
        {
            using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
            var buf = new byte[ReferrerEntryItem.SizeFor(known.Length)];
            ReferrerEntryItem.Write(buf, o, g, cursor, known);
            using (var h = fs.Fs.Start(4))
            using (fs.Fs.ExtentTree.Lock.Write())
                fs.Fs.ExtentTree.Put(h, new Reservoir.Format.Key(bytenr, Reservoir.Format.KeyTypes.ReferrerEntry, 0), buf);
        }
        string Findings() => string.Join("\n", Reservoir.Engine.Check.Fsck.Run(dev, new()).Errors.Select(e => e.ToString()));
        // Right: the golden subvolume and every snapshot, cursor at the last.
        Put(owner, gen, ids[^1], [goldenId, .. ids]);
        FsckAssert.Clean(dev);
        Put(owner, gen, ids[^1], [goldenId, ids[0], ids[1], ids[2]]);
        Assert.Contains($"subvolume {ids[3]} references the extent but is not listed", Findings());
        Put(owner, gen, ids[1], [goldenId, ids[0], ids[1], 9999]);
        Assert.Contains("lists subvolume 9999, which does not reference the extent", Findings());
        Put(owner + 1, gen, ids[1], [goldenId]);
        Assert.Contains("the extent there was written by", Findings());
        // `quota rescan` recounts and drops every entry the accounting trusted.
        Put(owner, gen, ids[^1], [goldenId, ids[0], ids[1], ids[2]]);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.RescanQuota(out _));
            Assert.Null(fs.Fs.ExtentTree.Get(new Reservoir.Format.Key(bytenr, Reservoir.Format.KeyTypes.ReferrerEntry, 0)));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>What the referrer entries keep in memory stays bounded: an entry keeps at most
    /// 64 group sides (the least recently used go), and past 2¹⁸ sides in all (or 2¹⁸ entries)
    /// the least recently used entries go with their sides, never the one being used; the
    /// counts stay right (forgetting every entry leaves none counted).</summary>
    [Fact]
    public void EntriesAndGroupSidesStayWithinTheirBounds()
    {
        var entries = new ReferrerEntries();
        int n = ReferrerEntries.MaxSidesTotal / ReferrerEntries.MaxSides + 8;
        long most = 0;
        for (ulong b = 0; b < (ulong)n; b++)
        {
            var e = new ReferrerEntries.Entry(256, 1, 0);
            entries.Keep(b, e);
            for (ulong g = 1; g <= ReferrerEntries.MaxSides + 2; g++) entries.SideOf(b, e, QgroupId.Of(1, g), inside: g % 2 == 0, epoch: 0, out _);
            Assert.Equal(ReferrerEntries.MaxSides, e.Sides!.Count);
            Assert.Same(e, entries.Find(b, 256, 1)); // the entry in use stays
            most = Math.Max(most, entries.Sides);
        }
        Assert.True(most <= ReferrerEntries.MaxSidesTotal, $"{most} sides kept");
        Assert.True(entries.Count < n, "no entry went: the bound was not reached");
        for (ulong b = 0; b < (ulong)n; b++) entries.Forget(b);
        Assert.Equal((0, 0L, 0L), (entries.Count, entries.Sides, entries.Ids));

        for (ulong b = 0; b <= ReferrerEntries.MaxEntries; b++) entries.Keep(b, new ReferrerEntries.Entry(256, 1, 0));
        Assert.True(entries.Count <= ReferrerEntries.MaxEntries);
        Assert.NotNull(entries.Find(ReferrerEntries.MaxEntries, 256, 1));
    }
}
