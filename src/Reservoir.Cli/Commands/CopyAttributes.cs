using System.Text;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>
/// What `reservoir cp` gives a copy besides its bytes, as cp(1) does: without -p the source's
/// permission bits less the umask (set-user-ID and the like dropped), so an executable stays
/// one and a private file stays private (copies were 0644 whatever the source, until the
/// twentieth session); with -p the whole mode, the owner where the
/// caller may give the file away, and the access and modification times; with -a also the
/// extended attributes, POSIX ACLs among them (<see cref="Xattrs"/>). Applied after the
/// contents (a directory after its entries, whose creation changes its times, and whose mode
/// might not let them in): owner, then mode (a chown may drop set-user-ID), attributes, times.
/// </summary>
internal sealed class CopyAttributes(CliContext ctx, bool preserve, bool xattrs, uint umask)
{
    public bool Xattrs => xattrs;

    private uint ModeFor(uint mode) => preserve ? mode & 0xFFF : mode & 0x1FF & ~umask;

    /// <summary>Onto <paramref name="path"/> in the image, from a source whose attributes are
    /// <paramref name="src"/>.</summary>
    public void ToImage(ReservoirFileSystem fs, string path, in InodeAttr src, List<(byte[] Name, byte[] Value)> attributes)
    {
        if (preserve) fs.Posix.Chown(path, src.Uid, src.Gid); // refused to an ordinary user: cp -p keeps its own then
        Check(fs.Posix.Chmod(path, ModeFor(src.Mode)), path);
        foreach (var (name, value) in attributes)
            if (fs.Posix.SetXattr(path, name, value) is var e && e != Errno.OK)
                ctx.Err.WriteLine($"reservoir cp: cannot keep attribute {Encoding.UTF8.GetString(name)} of ':{path}': {e.Describe()}");
        if (preserve) Check(fs.Posix.Utimens(path, src.Atime, src.Mtime), path);
    }

    /// <summary>Onto <paramref name="path"/> on the host.</summary>
    public void ToHost(string path, in InodeAttr src, List<(byte[] Name, byte[] Value)> attributes)
    {
        if (preserve) HostFiles.TryChown(path, src.Uid, src.Gid);
        HostFiles.Chmod(path, ModeFor(src.Mode));
        foreach (var (name, value) in attributes)
            if (HostFiles.TrySetXattr(path, name, value) is { } why)
                ctx.Err.WriteLine($"reservoir cp: cannot keep attribute {Encoding.UTF8.GetString(name)} of '{path}': {why}");
        if (preserve) HostFiles.SetTimes(path, src.Atime, src.Mtime);
    }

    private static void Check(Errno e, string path)
    {
        if (e != Errno.OK) throw new FsException(e, $"':{path}'");
    }
}
