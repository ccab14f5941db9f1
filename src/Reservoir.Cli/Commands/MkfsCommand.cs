using System.CommandLine;
using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format;

namespace Reservoir.Cli.Commands;

internal static class MkfsCommand
{
    public static Command Build(CliContext ctx)
    {
        var image = new Argument<string>("image") { Description = "Image file or block device to format" };
        var size = new Option<string?>("--size", "-s") { Description = "Size of a new image (e.g. 1G); required if the file does not exist, grows or keeps an existing file" };
        var label = new Option<string>("--label", "-L") { Description = "Filesystem label", DefaultValueFactory = _ => "" };
        var uuid = new Option<string?>("--uuid", "-U") { Description = "Filesystem UUID (default: random)" };
        var nodeSize = new Option<string>("--nodesize", "-n") { Description = "Tree node size (4K-64K, default 16K)", DefaultValueFactory = _ => "16K" };
        var blockSize = new Option<string>("--sectorsize", "-b") { Description = "Data block size (4K-64K, default 4K)", DefaultValueFactory = _ => "4K" };
        var force = new Option<bool>("--force", "-f") { Description = "Overwrite an existing Reservoir filesystem" };
        var quiet = new Option<bool>("--quiet", "-q") { Description = "Print nothing on success" };
        var quota = new Option<bool>("--quota", "-Q") { Description = "Enable quota groups from the start" };
        var preallocate = new Option<bool>("--preallocate") { Description = "Have the host give the image all its space now (fallocate), so that no write can later fail for the host's lack of room (an image is sparse otherwise)" };
        var rootOwner = new Option<string?>("--root-owner") { Description = "UID:GID owning the root directory (default: the user running mkfs, as mke2fs -E root_owner)" };
        var cmd = new Command("mkfs", "Create a new Reservoir filesystem (also: mkfs.reservoir)") { image, size, label, uuid, nodeSize, blockSize, force, quiet, quota, rootOwner, preallocate };
        cmd.SetAction(pr =>
        {
            string path = pr.GetValue(image)!;
            var o = new MkfsOptions { Label = pr.GetValue(label) ?? "" };
            if (pr.GetValue(rootOwner) is { } ro)
            {
                var parts = ro.Split(':');
                if (parts.Length != 2 || !uint.TryParse(parts[0], out uint ou) || !uint.TryParse(parts[1], out uint og))
                    throw new ArgumentException($"--root-owner {ro}: expected UID:GID, e.g. 1000:1000");
                (o.RootUid, o.RootGid) = (ou, og);
            }
            else (o.RootUid, o.RootGid) = (Geteuid(), Getegid());
            o.NodeSize = (int)ParseSize(pr.GetValue(nodeSize)!, "--nodesize");
            o.BlockSize = (int)ParseSize(pr.GetValue(blockSize)!, "--sectorsize");
            if (pr.GetValue(uuid) is { } u)
            {
                if (!Guid.TryParse(u, out var g)) throw new ArgumentException($"'{u}' is not a UUID");
                o.Uuid = g;
            }
            ulong? want = pr.GetValue(size) is { } s ? ParseSize(s, "--size") : null;
            bool exists = File.Exists(path);
            if (!exists && want == null) throw new ArgumentException($"'{path}' does not exist: give --size to create it");
            if (exists && !pr.GetValue(force) && LooksLikeReservoir(path))
                throw new IOException($"'{path}' already holds a Reservoir filesystem; use --force to overwrite it");
            if (!exists) { using (File.Create(path)) { } }
            if (want is { } w)
            {
                if (w < FormatConstants.MinDeviceSize) throw new ArgumentException($"--size {Units.Human(w)} is below the minimum {Units.Human(FormatConstants.MinDeviceSize)}");
                using var fsz = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
                fsz.SetLength((long)w);
            }
            using (var dev = FileBlockDevice.Open(path))
            {
                if (pr.GetValue(preallocate))
                {
                    try { dev.Preallocate(); }
                    catch (FsException)
                    {
                        // Nothing made is left: a file this mkfs created goes again.
                        if (!exists) { dev.Dispose(); File.Delete(path); }
                        throw;
                    }
                }
                Filesystem.Format(dev, o);
                if (pr.GetValue(quota))
                {
                    using var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 });
                    var qe = fs.EnableQuota();
                    if (qe != Errno.OK) throw new FsException(qe, "enabling quotas");
                }
                dev.Flush();
            }
            if (!pr.GetValue(quiet))
            {
                using var dev = FileBlockDevice.Open(path, readOnly: true);
                var (sb, _) = Filesystem.ReadSuperblock(dev);
                ctx.Out.WriteLine($"Created a Reservoir filesystem on {path}");
                ctx.Out.WriteLine($"  label       {(sb.Label.Length == 0 ? "(none)" : sb.Label)}");
                ctx.Out.WriteLine($"  uuid        {sb.Fsid}");
                ctx.Out.WriteLine($"  size        {Units.Human(sb.TotalBytes)} ({sb.TotalBytes} bytes)");
                ctx.Out.WriteLine($"  node size   {sb.NodeSize}");
                ctx.Out.WriteLine($"  block size  {sb.BlockSize}");
            }
            return 0;
        });
        return cmd;
    }

    internal static ulong ParseSize(string s, string what) =>
        Units.TryParseSize(s, out var v) ? v : throw new ArgumentException($"{what}: '{s}' is not a size (examples: 4096, 16K, 1G)");

    private static bool LooksLikeReservoir(string path)
    {
        try
        {
            using var dev = FileBlockDevice.Open(path, readOnly: true);
            Filesystem.ReadSuperblock(dev);
            return true;
        }
        catch (FsException) { return false; }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint Geteuid();

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "getegid")]
    private static extern uint Getegid();
}
