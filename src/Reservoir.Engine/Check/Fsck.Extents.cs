using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Check;

public sealed partial class Fsck
{
    /// <summary>Tree blocks and data extents against the extent tree; block group usage; the
    /// superblock's byte count; checksum items.</summary>
    private void CheckExtents()
    {
        // Every reachable tree block has a METADATA_ITEM of its tree and level, and vice versa.
        foreach (var (bytenr, b) in _walker.Blocks)
        {
            if (!_metaItems.TryGetValue(bytenr, out var mi))
                _r.Add(FindingKind.Structure, $"tree {b.Tree} block {bytenr}", "no METADATA_ITEM in the extent tree");
            else
            {
                if (mi.Item.Owner != b.Owner) _r.Add(FindingKind.Structure, $"tree block {bytenr}", $"extent item names owner {mi.Item.Owner}, the block's header {b.Owner}");
                if (mi.Level != b.Level) _r.Add(FindingKind.Structure, $"tree block {bytenr}", $"extent item says level {mi.Level}, block is level {b.Level}");
                if ((long)mi.Item.Refs != b.Refs) _r.Add(FindingKind.Structure, $"tree block {bytenr}", $"extent item says {mi.Item.Refs} references, {b.Refs} roots and nodes point at it (level {b.Level}, owner {b.Owner}, reached from trees {string.Join(", ", b.Trees)})");
            }
        }
        foreach (var (bytenr, _) in _metaItems)
            if (!_walker.Blocks.ContainsKey(bytenr))
                _r.Add(FindingKind.Structure, $"tree block {bytenr}", "METADATA_ITEM for a block no tree reaches (leaked)");

        // Data extents: reference counts against back-references and against the file trees.
        foreach (var (bytenr, (len, ei)) in _dataExtents)
        {
            string where = $"data extent [{bytenr}, +{len})";
            _r.DataExtents++;
            _r.DataBytes += (long)len;
            var refs = _dataRefs.GetValueOrDefault(bytenr) ?? new();
            long sum = refs.Values.Sum();
            if ((ulong)sum != ei.Refs) _r.Add(FindingKind.Structure, where, $"EXTENT_ITEM says {ei.Refs} references, back-references add up to {sum}");
            var seen = _refsByExtent.GetValueOrDefault(bytenr) ?? new();
            foreach (var (rk, count) in refs)
            {
                long want = _expectedRefs.GetValueOrDefault((bytenr, rk.Item1, rk.Item2, rk.Item3));
                if (want != count) _r.Add(FindingKind.Structure, where, $"back-reference (root {rk.Item1}, inode {rk.Item2}, offset {rk.Item3}) counts {count}, file extents {want}");
            }
            foreach (var rk in seen)
                if (!refs.ContainsKey(rk)) _r.Add(FindingKind.Structure, where, $"file extent of inode {rk.Item2} has no back-reference");
            if (_expectedExtentLen.TryGetValue(bytenr, out var l2) && l2 != len) _r.Add(FindingKind.Structure, where, $"file extents say the extent is {l2} bytes");
            if (!_csums.TryGetValue(bytenr, out int clen)) _r.Add(FindingKind.Structure, where, "no checksums");
            else if ((ulong)clen != len / _sb.BlockSize * 4) _r.Add(FindingKind.Structure, where, $"checksum item of {clen} bytes for {len / _sb.BlockSize} blocks");
        }
        foreach (var (bytenr, _) in _refsByExtent)
            if (!_dataExtents.ContainsKey(bytenr)) _r.Add(FindingKind.Structure, $"data extent {bytenr}", "referenced by file extents but has no EXTENT_ITEM");
        foreach (var (bytenr, _) in _dataRefs)
            if (!_dataExtents.ContainsKey(bytenr)) _r.Add(FindingKind.Structure, $"data extent {bytenr}", "back-references without an EXTENT_ITEM");
        foreach (var (bytenr, _) in _csums)
            if (!_dataExtents.ContainsKey(bytenr)) _r.Add(FindingKind.Structure, $"checksum item {bytenr}", "checksums for an extent that does not exist");

        // Placement: inside a block group of the right kind, no overlaps, usage adds up.
        var groups = _groups.OrderBy(g => g.Start).ToList();
        // Every group is one whole slot of the filesystem (SPEC.md §1).
        ulong slot = _sb.EffectiveGroupSize;
        foreach (var g in groups)
        {
            bool onSlot = g.Start >= FormatConstants.ReservedPrefix && (g.Start - FormatConstants.ReservedPrefix) % slot == 0 && g.Start < _sb.TotalBytes;
            if (!onSlot || g.Len != Math.Min(slot, _sb.TotalBytes - g.Start))
                _r.Add(FindingKind.Structure, $"block group {g.Start}", $"length {g.Len} is not a slot of the {_sb.TotalBytes}-byte filesystem (group size {slot})");
        }
        for (int i = 1; i < groups.Count; i++)
            if (groups[i - 1].Start + groups[i - 1].Len > groups[i].Start) _r.Add(FindingKind.Structure, $"block group {groups[i].Start}", "overlaps the previous block group");
        var used = new Dictionary<ulong, ulong>();
        var all = _metaItems.Select(kv => (Start: kv.Key, Len: (ulong)_sb.NodeSize, Data: false))
            .Concat(_dataExtents.Select(kv => (Start: kv.Key, Len: kv.Value.Len, Data: true))).OrderBy(e => e.Start).ToList();
        ulong prevEnd = 0;
        ulong total = 0;
        foreach (var (s, l, data) in all)
        {
            total += l;
            if (s < prevEnd) _r.Add(FindingKind.Structure, $"extent {s}", "overlaps the previous extent");
            prevEnd = Math.Max(prevEnd, s + l);
            var g = groups.FirstOrDefault(g => s >= g.Start && s < g.Start + g.Len);
            if (g.Len == 0 || s + l > g.Start + g.Len) { _r.Add(FindingKind.Structure, $"extent {s}", "not inside one block group"); continue; }
            if ((g.Item.Flags == BlockGroupFlags.Data) != data) _r.Add(FindingKind.Structure, $"extent {s}", $"{(data ? "data" : "tree block")} in a {g.Item.Flags} block group");
            used[g.Start] = used.GetValueOrDefault(g.Start) + l;
            foreach (var sbo in FormatConstants.SuperblockOffsets)
                if (sbo < s + l && sbo + FormatConstants.SuperblockSize > s) _r.Add(FindingKind.Structure, $"extent {s}", $"overlaps the superblock copy at {sbo}");
        }
        foreach (var g in groups)
        {
            ulong u = used.GetValueOrDefault(g.Start);
            if (u != g.Item.Used)
            {
                _r.Add(FindingKind.Counter, $"block group {g.Start}", $"used is {g.Item.Used}, extents add up to {u}");
                _countersNeedCommit = true;
            }
        }
        if (total != _sb.BytesUsed)
        {
            _r.Add(FindingKind.Counter, "superblock", $"bytes_used is {_sb.BytesUsed}, extents add up to {total}");
            _countersNeedCommit = true;
        }
    }

    /// <summary>Quota status and relations, then usage against a full recount (Fsck.Quota.cs).</summary>
    private void CheckQuota()
    {
        bool flagged = (_sb.CompatRo & FormatConstants_CompatRoQuota) != 0;
        if (flagged != _roots.ContainsKey(TreeIds.QuotaTree))
            _r.Add(FindingKind.Structure, "superblock", flagged ? "QUOTA feature set but no quota tree" : "quota tree present without the QUOTA feature");
        if (!_roots.ContainsKey(TreeIds.QuotaTree) || !_quotaOn)
        {
            // Nothing keeps these right while quotas are off: disabling deletes them all, and
            // enabling builds them again.
            int stale = _ownerRefs.Keys.Count(k => !_deletedSubvols.Contains(k.Root));
            if (stale > 0) _r.Add(FindingKind.Structure, "quota", $"quotas are off, yet {stale} EXTENT_OWNER_REF item(s) remain");
            if (_sharedRootRefs.Count > 0) _r.Add(FindingKind.Structure, "quota", $"quotas are off, yet {_sharedRootRefs.Count} SHARED_ROOT_REF item(s) remain");
            if (_originDrops.Count > 0) _r.Add(FindingKind.Structure, "quota", $"quotas are off, yet {_originDrops.Count} ORIGIN_DROP item(s) remain");
            if (_referrerEntries.Count > 0) _r.Add(FindingKind.Structure, "quota", $"quotas are off, yet {_referrerEntries.Count} REFERRER_ENTRY item(s) remain");
            if (_level0Usage.Count > 0) _r.Add(FindingKind.Structure, "quota", $"quotas are off, yet {_level0Usage.Count} SUBVOL_QGROUP_INFO item(s) remain");
            return;
        }
        CheckLevel0UsagePlace();
        // Relations: stored both ways, member below parent, both groups present; a higher
        // group counts each of its distinct level-0 descendants once.
        var children = new Dictionary<ulong, List<ulong>>();
        foreach (var (a, b) in _qgroupRelations)
        {
            if (!_qgroupRelations.Contains((b, a))) _r.Add(FindingKind.Structure, $"qgroup relation {QgroupId.Show(a)} {QgroupId.Show(b)}", "stored one way only");
            if (QgroupId.Level(a) >= QgroupId.Level(b)) continue; // the other direction of a pair
            if (!_qgroupInfo.ContainsKey(a) || !_qgroupInfo.ContainsKey(b)) _r.Add(FindingKind.Structure, $"qgroup relation {QgroupId.Show(a)} {QgroupId.Show(b)}", "names a qgroup that does not exist");
            (children.TryGetValue(b, out var l) ? l : children[b] = new()).Add(a);
        }
        CheckQuotaUsage(children);
    }

    private const ulong FormatConstants_CompatRoQuota = Features.CompatRoQuota;

    /// <summary>Reads every block that holds written data (referenced by a regular file extent;
    /// unwritten blocks of preallocated extents hold whatever was on the disk) and checks it
    /// against its checksum.</summary>
    private void CheckDataCsums()
    {
        uint bs = _sb.BlockSize;
        var written = new Dictionary<ulong, List<(ulong From, ulong To)>>();
        foreach (var (ino, list) in _fileExtents)
        {
            if (_inodes.TryGetValue(ino, out var it) && (it.Flags & InodeFlags.NoDataSum) != 0) continue;
            foreach (var (_, fe) in list)
                if (fe.Type == FileExtentType.Regular && fe.DiskBytenr != 0)
                {
                    if (!written.TryGetValue(fe.DiskBytenr, out var l)) written[fe.DiskBytenr] = l = new();
                    l.Add((fe.Offset, fe.Offset + fe.NumBytes));
                }
        }
        var buf = new byte[bs];
        foreach (var (bytenr, ranges) in written)
        {
            byte[]? item = ReadCsumItem(bytenr);
            if (item == null) continue;
            var blocks = new SortedSet<ulong>();
            foreach (var (from, to) in ranges)
                for (ulong off = from / bs * bs; off < to; off += bs) blocks.Add(off);
            foreach (var off in blocks)
            {
                int i = (int)(off / bs);
                if (i * 4 + 4 > item.Length) break;
                try { _dev.Read(bytenr + off, buf); }
                catch (FsException ex) { _r.Add(FindingKind.Structure, $"data block {bytenr + off}", ex.Message); continue; }
                uint want = BinaryPrimitives.ReadUInt32LittleEndian(item.AsSpan(i * 4));
                if (Crc32C.Compute(buf) != want) _r.Add(FindingKind.Structure, $"data block {bytenr + off}", "checksum mismatch");
            }
        }
    }

    private byte[]? ReadCsumItem(ulong bytenr)
    {
        var ri = _roots[TreeIds.CsumTree];
        var t = new Tree.BTree(TreeIds.CsumTree, _store, _store.Read(ri.Bytenr, ri.Generation, ri.Level), RealSched);
        return t.Get(new Key(TreeIds.CsumObjectId, KeyTypes.ExtentCsum, bytenr));
    }

    private static Common.Concurrency.IScheduler RealSched => Common.Concurrency.RealScheduler.Instance;
}
