using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Reservoir.Engine;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>Higher-level qgroups: groups of subvolumes' groups, whose limits every member's
/// writes reserve against (all or nothing), whose numbers are their members' sums, and whose
/// relations survive a remount and pass fsck's recount.</summary>
public class QgroupHierarchyTests
{
    private const ulong Root = Filesystem.RootIno;
    private static ulong Q(ushort level, ulong id) => QgroupId.Of(level, id);

    private static (ulong Referenced, ulong Exclusive) Usage(Filesystem fs, ulong id)
    {
        var g = fs.Qgroups().Single(x => x.Id == id);
        return (g.Referenced, g.Exclusive);
    }

    [Fact]
    public void AParentGroupsLimitHoldsForAllItsMembersTogether()
    {
        var dev = NewDevice(128UL << 20);
        var mib = new byte[1 << 20];
        new Random(1).NextBytes(mib);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));
            Ok(fs.CreateSubvolume(Root, "b", 0, 0, out var b));
            ulong qa = Q(0, 256), qb = Q(0, 257), team = Q(1, 100), org = Q(2, 1);
            Assert.Equal(Errno.EINVAL, fs.CreateQgroup(Q(0, 999)));     // level 0 comes with a subvolume
            Ok(fs.CreateQgroup(team));
            Assert.Equal(Errno.EEXIST, fs.CreateQgroup(team));
            Ok(fs.CreateQgroup(org));
            Assert.Equal(Errno.EINVAL, fs.AssignQgroup(team, qa));       // a parent is a higher level
            Assert.Equal(Errno.ENOENT, fs.AssignQgroup(Q(0, 999), team));
            ulong fa = CreateFile(fs, a.Ino, "f", mib);                 // 1 MiB before joining
            Ok(fs.Sync());
            Ok(fs.AssignQgroup(qa, team));
            Assert.Equal(Errno.EEXIST, fs.AssignQgroup(qa, team));
            Ok(fs.AssignQgroup(qb, team));
            Ok(fs.AssignQgroup(team, org));
            Assert.Equal((1UL << 20, 1UL << 20), Usage(fs, team));     // a's MiB, counted on joining
            Assert.Equal((1UL << 20, 1UL << 20), Usage(fs, org));
            Ok(fs.SetQgroupLimit(team, 3UL << 20, ulong.MaxValue));
            Ok(fs.Write(fa, 1 << 20, mib, out _));                      // a: 2 MiB
            ulong fb = CreateFile(fs, b.Ino, "f");
            Ok(fs.Write(fb, 0, mib, out _));                            // 1 MiB fits: 3 in all
            Assert.Equal(Errno.EDQUOT, fs.Write(fb, 1 << 20, new byte[4096], out int n)); // not a block more
            Assert.Equal(0, n);
            Ok(fs.Sync());
            Assert.Equal((3UL << 20, 3UL << 20), Usage(fs, team));
            Assert.Equal(Usage(fs, qa).Referenced + Usage(fs, qb).Referenced, Usage(fs, team).Referenced);
            Assert.Equal(Usage(fs, team), Usage(fs, org));
            // Out of the team, b is limited by nothing again.
            Ok(fs.RemoveQgroupRelation(qb, team));
            Ok(fs.Write(fb, 1 << 20, mib, out _));
            Ok(fs.Sync());
            Assert.Equal((2UL << 20, 2UL << 20), Usage(fs, team));
            Assert.Equal(Errno.EBUSY, fs.DestroyQgroup(team));          // it has members
            Assert.Empty(fs.VerifyReservations());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Assert.Equal(new[] { (Q(0, 256), Q(1, 100)), (Q(1, 100), Q(2, 1)) }, fs.QgroupRelations().ToArray());
            // A member's subvolume deleted: its group and its memberships go, the parents' sums drop.
            Ok(fs.DeleteSubvolume(Root, "a"));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            Assert.Equal((0UL, 0UL), Usage(fs, Q(1, 100)));
            Assert.DoesNotContain(fs.QgroupRelations(), r => r.Child == Q(0, 256));
            Ok(fs.RemoveQgroupRelation(Q(1, 100), Q(2, 1)));
            Ok(fs.DestroyQgroup(Q(1, 100)));
            Ok(fs.DestroyQgroup(Q(2, 1)));
            Assert.DoesNotContain(fs.Qgroups(), g => QgroupId.Level(g.Id) > 0);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>A group of some snapshots, the source outside it, and a snapshot outside it
    /// too: when the source lets go of two extents in one commit, "does anyone outside the
    /// group reference it?" is asked per extent, and the commit first asks whoever answered yes
    /// for the previous extent. Here that witness (w) holds the first extent and not the
    /// second, which nobody outside the group holds: the group must gain the second as its
    /// own and not the first.</summary>
    [Fact]
    public void AGroupOfSomeSnapshotsIsExactWhenTheSourceLetsGoOfSeveralExtentsAtOnce()
    {
        var dev = NewDevice(128UL << 20);
        var data = new byte[64 << 10];
        new Random(3).NextBytes(data);
        ulong len = (ulong)data.Length;
        ulong Id(InodeAttr a) => Reservoir.Engine.Inodes.NodeIds.Decode(a.Ino).TreeId;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            ulong group = Q(1, 7);
            Ok(fs.CreateQgroup(group));
            ulong f1 = CreateFile(fs, sv.Ino, "f1", data);
            Ok(fs.Sync());
            // Extent 1 (f1): g1, g2 in the group, w outside.
            Ok(fs.CreateSnapshot(sv.Ino, Root, "g1", readOnly: true, out var g1));
            Ok(fs.CreateSnapshot(sv.Ino, Root, "g2", readOnly: true, out var g2));
            Ok(fs.CreateSnapshot(sv.Ino, Root, "w", readOnly: true, out var w));
            data[0] ^= 1;
            ulong f2 = CreateFile(fs, sv.Ino, "f2", data);
            Ok(fs.Sync());
            // Extents 1 and 2: g3, g4 in the group.
            Ok(fs.CreateSnapshot(sv.Ino, Root, "g3", readOnly: true, out var g3));
            Ok(fs.CreateSnapshot(sv.Ino, Root, "g4", readOnly: true, out var g4));
            foreach (var g in new[] { g1, g2, g3, g4 }) Ok(fs.AssignQgroup(Q(0, Id(g)), group));
            Assert.Equal((2 * len, 0UL), Usage(fs, group)); // the source has both
            // The source lets go of both in one commit.
            data[1] ^= 1;
            Ok(fs.Write(f1, 0, data, out _));
            Ok(fs.Write(f2, 0, data, out _));
            Ok(fs.Sync());
            Assert.Equal((2 * len, len), Usage(fs, group)); // extent 2 is the group's alone; w has extent 1
            Assert.Equal((len, 0UL), Usage(fs, Q(0, Id(w))));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>A group of the source and its older snapshots, the newer ones outside (both
    /// sides big): when the source lets go of an extent written after the older snapshots, "does
    /// any other member reference it?" is "no" without walking the newer snapshots (none can be a
    /// member: their ids are above every member's). Without the bound, all of them are walked.
    /// The commit's search, so the early accounting (which answers this case too, from the
    /// extent's first candidates) is off.</summary>
    [Fact]
    public void AGroupOfOlderSnapshotsIsAnsweredWithoutWalkingTheNewerOnes()
    {
        var dev = NewDevice(128UL << 20);
        var data = new byte[64 << 10];
        new Random(5).NextBytes(data);
        ulong len = (ulong)data.Length;
        using (var fs = Mount(dev, new MountOptions { EarlyAccounting = false }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv)); // 256
            ulong source = Q(0, 256), group = Q(1, 1);
            CreateFile(fs, sv.Ino, "a", data);                     // extent A
            Ok(fs.CreateQgroup(group));
            Ok(fs.AssignQgroup(source, group));
            for (int i = 0; i < 41; i++) Ok(fs.CreateSnapshot(sv.Ino, Root, $"old{i}", true, out _)); // 257-297 join the group
            Ok(fs.Sync()); // E is born in a later transaction than the older snapshots
            data[0] ^= 1;
            ulong e = CreateFile(fs, sv.Ino, "e", data);           // extent E, after the older snapshots
            Ok(fs.Sync());
            Ok(fs.RemoveQgroupRelation(source, group));
            for (int i = 0; i < 40; i++) Ok(fs.CreateSnapshot(sv.Ino, Root, $"new{i}", true, out _)); // 298-337, outside
            Ok(fs.AssignQgroup(source, group));
            Ok(fs.Sync());
            // 42 members of 83 level-0 groups: neither side is the small one.
            Assert.Equal((2 * len, 0UL), Usage(fs, group));       // A and E, both shared with the newer ones
            long walked = fs.Fs.Stats.GroupCandidatesWalked;
            data[1] ^= 1;
            Ok(fs.Write(e, 0, data, out _));                       // the source lets go of E
            Ok(fs.Sync());
            // Only the writer itself (a member, known to have let go); without the bound 41.
            Assert.Equal(1, fs.Fs.Stats.GroupCandidatesWalked - walked);
            Assert.Equal((2 * len, len), Usage(fs, group));       // A (shared) and the new E (alone); the old E left with the source
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// A relation and the numbers it implies take effect together. A subvolume's group assigned
    /// to a parent once joined it at once and left the parent's numbers to the next commit's
    /// recount: a writer in between was held to the parent's limit with the member's bytes not
    /// yet counted (btrfs's inconsistent window, where limits quietly stop holding). Here the
    /// member brings 4 MiB to a parent limited to 2 MiB; a writer that sees the relation (the
    /// assignment taking effect, as `qgroup show -p` would) must be refused, in every order of
    /// the two threads.
    /// </summary>
    [Fact]
    public void AWriterThatSeesAMembershipIsHeldToTheParentsLimitWithTheMembersBytesCounted()
    {
        const ulong mib = 1UL << 20;
        ulong member = Q(0, 256), parent = Q(1, 100);
        var data = new byte[4 * mib];
        new Random(5).NextBytes(data);
        for (int seed = 1; seed <= 30; seed++)
        {
            var s = new DeterministicScheduler(seed, seed % 2 == 0 ? ScheduleStrategy.Pct : ScheduleStrategy.RandomWalk);
            var dev = new MemoryBlockDevice(128UL << 20);
            Errno late = Errno.OK;
            s.Run(() =>
            {
                Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, s);
                using var fs = Filesystem.Mount(dev, new MountOptions { Scheduler = s, CommitIntervalMs = 0 }, new DataOptions());
                Ok(fs.EnableQuota());
                Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));
                ulong f = CreateFile(fs, a.Ino, "f", data);
                Ok(fs.Sync());
                Ok(fs.CreateQgroup(parent));
                Ok(fs.SetQgroupLimit(parent, 2 * mib, ulong.MaxValue));
                var assigner = s.Start("assign", () => Ok(fs.AssignQgroup(member, parent)));
                while (!fs.QgroupRelations().Contains((member, parent))) s.Yield("test:writer");
                late = fs.Write(f, 0, new byte[4096], out _);
                assigner.Join();
                Assert.Equal((4 * mib, 4 * mib), Usage(fs, parent));
                Assert.Empty(fs.VerifyReservations());
            });
            Assert.True(late == Errno.EDQUOT, $"seed {seed}: a write after the membership showed answered {late}, not EDQUOT");
            FsckAssert.Clean(dev);
        }
    }

    /// <summary>`quota rescan`: with the accounting right it changes nothing; with a group's
    /// numbers made wrong by hand it puts them back (and says how many), in one step, so the
    /// limits keep holding; with quotas off it answers ENOTCONN.</summary>
    [Fact]
    public void ARescanChangesNothingUnlessTheNumbersDrifted()
    {
        var dev = NewDevice(64UL << 20);
        var mib = new byte[1 << 20];
        new Random(3).NextBytes(mib);
        using (var fs = Mount(dev))
        {
            Assert.Equal(Errno.ENOTCONN, fs.RescanQuota(out _));
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));
            CreateFile(fs, a.Ino, "f", mib);
            Ok(fs.CreateSnapshot(a.Ino, Root, "s", true, out _));
            Ok(fs.CreateQgroup(Q(1, 1)));
            Ok(fs.AssignQgroup(Q(0, 256), Q(1, 1)));
            Ok(fs.Sync());
            var before = fs.Qgroups().Select(g => (g.Id, g.Referenced, g.Exclusive)).ToList();
            Ok(fs.RescanQuota(out int corrected));
            Assert.Equal(0, corrected);
            Assert.Equal(before, fs.Qgroups().Select(g => (g.Id, g.Referenced, g.Exclusive)).ToList());
            // A drift, made by hand: 0/256 says it holds 1 MiB alone.
            fs.Fs.Quota.SetRecounted(before.ToDictionary(g => g.Id, g => g.Id == Q(0, 256) ? (g.Referenced, 1UL << 20) : (g.Referenced, g.Exclusive)));
            Assert.Equal((1UL << 20, 1UL << 20), Usage(fs, Q(0, 256)));
            Ok(fs.RescanQuota(out corrected));
            Assert.Equal(1, corrected);
            Assert.Equal(before, fs.Qgroups().Select(g => (g.Id, g.Referenced, g.Exclusive)).ToList());
            Assert.Equal((1UL << 20, 0UL), Usage(fs, Q(0, 256))); // shared with the snapshot
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// A subvolume's group joining or leaving a group moves numbers only for that subvolume's
    /// extents, and they are worked out from those alone (docs/SNAPSHOTS.md §3, "Relations"):
    /// with 300 writable snapshots of a golden subvolume of 20 files, a snapshot with a file of
    /// its own joining a group, the golden subvolume joining it, the snapshot leaving it read no
    /// tree whole (no recount) and make a few lookups per extent, where a recount reads 301
    /// trees; each leaves the numbers fsck's recount gives. Exclusive moves when the last
    /// referrer outside joins (a subvolume and its one snapshot). A group of level 1 joining one
    /// of level 2 still recounts.
    /// </summary>
    [Fact]
    public void AMembershipIsWorkedOutFromTheSubvolumesOwnExtents()
    {
        const int Snaps = 300, Files = 20;
        var dev = NewDevice(256UL << 20);
        var data = new byte[4096];
        const ulong Len = 4096, All = Files * Len;
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "golden", 0, 0, out var golden)); // 256
            for (int f = 0; f < Files; f++)
            {
                data[0] = (byte)f;
                CreateFile(fs, golden.Ino, $"f{f}", data);
            }
            Ok(fs.Sync());
            ulong snap = 0;
            for (int i = 0; i < Snaps; i++)
            {
                Ok(fs.CreateSnapshot(golden.Ino, Root, $"s{i}", false, out var s)); // 257…556
                if (i == 43) snap = s.Ino;                                            // 300
            }
            data[0] = 0xEE;
            CreateFile(fs, snap, "own", data);
            Ok(fs.CreateQgroup(Q(1, 1)));
            Ok(fs.CreateQgroup(Q(2, 1)));
            Ok(fs.Sync());
            var st = fs.Fs.Stats;
            long recounts = st.QuotaRecounts, worked = st.RelationsWorkedOut, probes = st.OwnerRefProbes;
            Ok(fs.AssignQgroup(Q(0, 300), Q(1, 1)));
            Assert.Equal((All + Len, Len), Usage(fs, Q(1, 1)));     // the golden files shared with everyone, its own file alone
            Ok(fs.AssignQgroup(Q(0, 256), Q(1, 1)));
            Assert.Equal((All + Len, Len), Usage(fs, Q(1, 1)));     // the golden files are still the other snapshots' too
            Ok(fs.RemoveQgroupRelation(Q(0, 300), Q(1, 1)));
            Assert.Equal((All, 0UL), Usage(fs, Q(1, 1)));
            Assert.Equal(recounts, st.QuotaRecounts);
            Assert.Equal(3, st.RelationsWorkedOut - worked);
            // Two questions per extent and group, each stopping at its first referrer (a walk
            // of the snapshots would make thousands).
            Assert.True(st.OwnerRefProbes - probes <= 3 * (Files + 1) * 4, $"{st.OwnerRefProbes - probes} lookups");

            // The last referrer outside joining makes the group hold the extent alone, and
            // leaving takes that back.
            Ok(fs.CreateSubvolume(Root, "x", 0, 0, out var x));       // 557
            CreateFile(fs, x.Ino, "f", data);
            Ok(fs.CreateSnapshot(x.Ino, Root, "y", false, out _));   // 558
            Ok(fs.CreateQgroup(Q(1, 2)));
            Ok(fs.AssignQgroup(Q(0, 557), Q(1, 2)));
            Assert.Equal((Len, 0UL), Usage(fs, Q(1, 2)));
            Ok(fs.AssignQgroup(Q(0, 558), Q(1, 2)));
            Assert.Equal((Len, Len), Usage(fs, Q(1, 2)));
            Ok(fs.RemoveQgroupRelation(Q(0, 557), Q(1, 2)));
            Assert.Equal((Len, 0UL), Usage(fs, Q(1, 2)));
            Assert.Equal(recounts, st.QuotaRecounts);

            Ok(fs.AssignQgroup(Q(1, 1), Q(2, 1)));
            Assert.Equal(recounts + 1, st.QuotaRecounts);
            Assert.Equal((All, 0UL), Usage(fs, Q(2, 1)));
        }
        FsckAssert.Clean(dev);
    }
}
