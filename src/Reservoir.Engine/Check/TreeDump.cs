using System.Buffers.Binary;
using System.Text;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Check;

public readonly record struct TreeItemInfo(ulong ObjectId, string Type, ulong Offset, int Size, string Description);

public readonly record struct TreeNodeInfo(ulong Bytenr, int Level, int Items, ulong Generation);

/// <summary>Decodes trees item by item for `reservoir inspect tree` (like btrfs inspect-internal dump-tree).</summary>
public static class TreeDump
{
    public static IReadOnlyList<(ulong Id, string Name)> Trees { get; } =
        [(TreeIds.RootTree, "root"), (TreeIds.ExtentTree, "extent"), (TreeIds.CsumTree, "csum"), (TreeIds.FsTree, "fs")];

    public static ulong ParseTree(string s) => s.ToLowerInvariant() switch
    {
        "root" => TreeIds.RootTree,
        "extent" => TreeIds.ExtentTree,
        "csum" => TreeIds.CsumTree,
        "fs" or "top" => TreeIds.FsTree,
        _ => ulong.TryParse(s, out var id) ? id : throw new ArgumentException($"unknown tree '{s}' (root, extent, csum, fs or a number)"),
    };

    private static BTree? TreeOf(Filesystem fs, ulong id) => id switch
    {
        TreeIds.RootTree => fs.Fs.RootTree,
        TreeIds.ExtentTree => fs.Fs.ExtentTree,
        TreeIds.CsumTree => fs.Fs.CsumTree,
        TreeIds.QuotaTree => fs.Fs.QuotaTree,
        _ => fs.Fs.FsTree(id),
    };

    public static List<TreeItemInfo> Items(Filesystem fs, ulong treeId)
    {
        var t = TreeOf(fs, treeId) ?? throw new ArgumentException($"no tree {treeId}");
        var list = new List<TreeItemInfo>();
        using var lk = t.Lock.Read();
        var path = new TreePath();
        if (!t.SeekGE(Key.Min, path)) return list;
        do
        {
            var k = path.Key;
            list.Add(new TreeItemInfo(k.ObjectId, KeyTypes.Name(k.Type), k.Offset, path.Data.Length, Describe(k, path.Data)));
        } while (t.Next(path));
        return list;
    }

    public static List<TreeNodeInfo> Nodes(Filesystem fs, ulong treeId)
    {
        var t = TreeOf(fs, treeId) ?? throw new ArgumentException($"no tree {treeId}");
        var list = new List<TreeNodeInfo>();
        using var lk = t.Lock.Read();
        void Walk(TreeNode n)
        {
            list.Add(new TreeNodeInfo(n.Bytenr, n.Level, n.NrItems, n.Generation));
            if (n.Level > 0) for (int i = 0; i < n.NrItems; i++) Walk(t.ReadChild(n, i));
        }
        Walk(t.Root);
        return list;
    }

    public static string Describe(Key k, ReadOnlySpan<byte> d)
    {
        switch (k.Type)
        {
            case KeyTypes.InodeItem when d.Length == InodeItem.Size:
                var i = InodeItem.Read(d);
                return $"mode {Convert.ToString(i.Mode, 8)} nlink {i.Nlink} uid {i.Uid} gid {i.Gid} size {i.FileSize} nbytes {i.Nbytes} gen {i.Generation} transid {i.Transid}";
            case KeyTypes.InodeRef:
                var refs = new List<string>();
                while (d.Length > 0 && InodeRef.TryRead(d, out var r, out int rs)) { refs.Add($"index {r.Index} name '{Encoding.UTF8.GetString(r.Name)}'"); d = d[rs..]; }
                return string.Join("; ", refs);
            case KeyTypes.InodeExtref:
                var xrefs = new List<string>();
                while (d.Length > 0 && InodeExtref.TryRead(d, out var x, out int xs)) { xrefs.Add($"parent {x.Parent} index {x.Index} name '{Encoding.UTF8.GetString(x.Name)}'"); d = d[xs..]; }
                return string.Join("; ", xrefs);
            case KeyTypes.DirItem or KeyTypes.DirIndex or KeyTypes.XattrItem:
                var es = new List<string>();
                while (d.Length > 0 && DirEntry.TryRead(d, out var e, out int size))
                {
                    es.Add(k.Type == KeyTypes.XattrItem ? $"name '{Encoding.UTF8.GetString(e.Name)}' value {e.Data.Length} bytes" : $"'{Encoding.UTF8.GetString(e.Name)}' -> {e.Location.ObjectId} type {e.FileType}");
                    d = d[size..];
                }
                return string.Join("; ", es);
            case KeyTypes.ExtentData when FileExtentItem.TryRead(d, out var f):
                return f.Type == FileExtentType.Inline ? $"inline {f.NumBytes} bytes"
                    : $"{f.Type.ToString().ToLowerInvariant()} disk [{f.DiskBytenr}, +{f.DiskNumBytes}) offset {f.Offset} len {f.NumBytes} gen {f.Generation}";
            case KeyTypes.ExtentCsum:
                return $"{d.Length / 4} checksums" + (d.Length >= 4 ? $", first {BinaryPrimitives.ReadUInt32LittleEndian(d):x8}" : "");
            case KeyTypes.RootItem when d.Length == RootItem.Size:
                var ri = RootItem.Read(d);
                return $"bytenr {ri.Bytenr} level {ri.Level} gen {ri.Generation} refs {ri.Refs} root_dir {ri.RootDirId}"
                    + (ri.ReceivedUuid == Guid.Empty ? "" : $" received_uuid {Common.UuidText.Of(ri.ReceivedUuid)} stransid {ri.Stransid} rtransid {ri.Rtransid}");
            case KeyTypes.ExtentItem or KeyTypes.MetadataItem when ExtentItem.TryRead(d, out var x):
                return $"refs {x.Refs} gen {x.Generation} flags {x.Flags} owner {x.Owner}";
            case KeyTypes.ExtentDataRef when ExtentDataRef.TryRead(d, out var dr):
                return $"root {dr.Root} inode {dr.Inode} offset {dr.Offset} count {dr.Count}";
            case KeyTypes.BlockGroupItem when BlockGroupItem.TryRead(d, out var bg):
                return $"{bg.Flags} used {bg.Used}";
            case KeyTypes.OrphanItem:
                return "orphan";
            case KeyTypes.SubvolQgroupInfo or KeyTypes.QgroupInfo when QgroupInfoItem.TryRead(d, out var qi):
                return $"referenced {qi.Referenced} exclusive {qi.Exclusive} gen {qi.Generation}";
            case KeyTypes.SharedRootRef or KeyTypes.OriginDrop when U64Item.TryRead(d, out var transid):
                return $"transaction {transid}";
            case KeyTypes.ReferrerEntry when ReferrerEntryItem.TryRead(d, out ulong owner, out ulong gen, out ulong cursor, out int count, out int sides):
                return ReferrerEntryText(d, owner, gen, cursor, count, sides);
            default:
                return $"{d.Length} bytes";
        }
    }

    private static string ReferrerEntryText(ReadOnlySpan<byte> d, ulong owner, ulong gen, ulong cursor, int count, int sides)
    {
        var text = new System.Text.StringBuilder($"owner {owner} gen {gen} cursor {cursor} referrers [{string.Join(' ', ReferrerEntryItem.Ids(d, count))}]");
        foreach (var v in ReferrerEntryItem.Sides(d, count, sides))
            text.Append($"; group {QgroupId.Show(v.Group)} {(v.Inside ? "members" : "others")} epoch {v.Epoch} cursor {v.Cursor} [{string.Join(' ', v.Ids)}]");
        return text.ToString();
    }
}
