using System.Buffers;
using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>What a send wrote.</summary>
public readonly record struct SendSummary(long Commands, long StreamBytes, long Inodes, long DataBytes);

/// <summary>
/// A full send: the whole subvolume as a stream that `btrfs receive` or `reservoir receive`
/// turns into an equal subvolume. Directories are walked parents first, so every command's
/// path exists on the receiving side when it arrives, and a second name of an inode becomes a
/// LINK to the first. The order of the commands for one inode protects what the receiver
/// would otherwise lose:
/// <list type="bullet">
/// <item>data before ownership and mode: a write on the receiving side clears set-user-ID and
/// file capabilities, so CHOWN and CHMOD come after the last WRITE;</item>
/// <item>xattrs after CHOWN and CHMOD: chown clears security.capability, and a POSIX ACL set
/// before would be rewritten by the chmod;</item>
/// <item>a directory's mode, xattrs and times after its children: a read-only directory would
/// refuse them, a default ACL would be inherited by them (the stream gives each its own), and
/// every child created would move the directory's mtime;</item>
/// <item>holes stay holes: only the ranges SEEK_DATA finds are written, then a TRUNCATE gives the
/// size when the data ends before it.</item>
/// </list>
/// </summary>
public sealed class FullSend
{
    private readonly ISendSource _src;
    private readonly SendStreamWriter _w;
    private readonly Dictionary<ulong, string> _linked = new();
    private long _inodes, _data;

    private FullSend(ISendSource src, Stream output)
    {
        _src = src;
        _w = new SendStreamWriter(output);
    }

    /// <summary>Sends <paramref name="src"/> as subvolume <paramref name="name"/> with the identity
    /// the receiver records (the source's uuid and ctransid), so that later incremental streams
    /// find it.</summary>
    public static SendSummary Run(ISendSource src, string name, Guid uuid, ulong ctransid, Stream output)
    {
        if (name.Length == 0 || name.Contains('/') || name is "." or "..")
            throw new FsException(Errno.EINVAL, $"send: '{name}' is not a subvolume name");
        var s = new FullSend(src, output);
        s._w.Begin(SendCommand.Subvol).Path(SendAttr.Path, name).Uuid(SendAttr.Uuid, uuid).U64(SendAttr.Ctransid, ctransid).Finish();
        var root = src.Lstat("");
        if (!root.IsDir) throw new FsException(Errno.ENOTDIR, "send: the subvolume's root is not a directory");
        s._inodes++;
        s.Directory("", root);
        s._w.Begin(SendCommand.End).Finish();
        return new SendSummary(s._w.CommandsWritten, s._w.BytesWritten, s._inodes, s._data);
    }

    private static string Child(string dir, string name) => dir.Length == 0 ? name : dir + "/" + name;

    private void Directory(string path, SendStat st)
    {
        var names = _src.List(path).ToList();
        names.Sort(string.CompareOrdinal); // the same stream for the same subvolume, whatever the directory order
        foreach (var name in names)
        {
            string p = Child(path, name);
            var c = _src.Lstat(p);
            if (!c.IsDir && c.Nlink > 1)
            {
                if (_linked.TryGetValue(c.Ino, out var first))
                {
                    _w.Begin(SendCommand.Link).Path(SendAttr.Path, p).Path(SendAttr.PathLink, first).Finish();
                    continue;
                }
                _linked[c.Ino] = p;
            }
            _inodes++;
            switch (c.Type)
            {
                case 0x4000:
                    _w.Begin(SendCommand.Mkdir).Path(SendAttr.Path, p).U64(SendAttr.Ino, c.Ino).Finish();
                    Directory(p, c);
                    continue;
                case 0x8000:
                    _w.Begin(SendCommand.Mkfile).Path(SendAttr.Path, p).U64(SendAttr.Ino, c.Ino).Finish();
                    Data(p, c);
                    break;
                case 0xA000:
                    _w.Begin(SendCommand.Symlink).Path(SendAttr.Path, p).U64(SendAttr.Ino, c.Ino)
                        .Path(SendAttr.PathLink, _src.ReadLink(p)).Finish();
                    break;
                case 0x1000:
                    _w.Begin(SendCommand.Mkfifo).Path(SendAttr.Path, p).U64(SendAttr.Ino, c.Ino)
                        .U64(SendAttr.Mode, c.Mode).U64(SendAttr.Rdev, 0).Finish();
                    break;
                case 0xC000:
                    _w.Begin(SendCommand.Mksock).Path(SendAttr.Path, p).U64(SendAttr.Ino, c.Ino)
                        .U64(SendAttr.Mode, c.Mode).U64(SendAttr.Rdev, 0).Finish();
                    break;
                case 0x2000 or 0x6000:
                    _w.Begin(SendCommand.Mknod).Path(SendAttr.Path, p).U64(SendAttr.Ino, c.Ino)
                        .U64(SendAttr.Mode, c.Mode).U64(SendAttr.Rdev, c.Rdev).Finish();
                    break;
                default:
                    throw new FsException(Errno.EINVAL, $"send: '{p}' has file type {c.Type >> 12}, which no stream can carry");
            }
            Attributes(p, c);
        }
        Attributes(path, st);
    }

    /// <summary>Owner, mode, xattrs and times, in that order (see the class comment).</summary>
    private void Attributes(string p, SendStat c)
    {
        _w.Begin(SendCommand.Chown).Path(SendAttr.Path, p).U64(SendAttr.Uid, c.Uid).U64(SendAttr.Gid, c.Gid).Finish();
        if (!c.IsLnk) _w.Begin(SendCommand.Chmod).Path(SendAttr.Path, p).U64(SendAttr.Mode, c.Mode & 0xFFF).Finish();
        foreach (var (name, value) in _src.Xattrs(p))
            _w.Begin(SendCommand.SetXattr).Path(SendAttr.Path, p).Bytes(SendAttr.XattrName, name).Bytes(SendAttr.XattrData, value).Finish();
        _w.Begin(SendCommand.Utimes).Path(SendAttr.Path, p).Time(SendAttr.Atime, c.Atime).Time(SendAttr.Mtime, c.Mtime)
            .Time(SendAttr.Ctime, c.Ctime).Finish();
    }

    private void Data(string p, SendStat c)
    {
        long size = (long)c.Size, end = 0;
        if (size == 0) return;
        byte[] buf = ArrayPool<byte>.Shared.Rent(SendStreamFormat.MaxWriteData);
        try
        {
            using var f = _src.Open(p);
            long at = 0;
            while (at < size)
            {
                long data = f.NextData(at);
                if (data < 0 || data >= size) break;
                long hole = Math.Min(f.NextHole(data), size);
                for (long off = data; off < hole;)
                {
                    int want = (int)Math.Min(SendStreamFormat.MaxWriteData, hole - off);
                    int n = f.Read(off, buf.AsSpan(0, want));
                    if (n <= 0) { hole = off; break; } // shorter than lstat said: the size below still holds
                    _w.Begin(SendCommand.Write).Path(SendAttr.Path, p).U64(SendAttr.FileOffset, (ulong)off)
                        .Bytes(SendAttr.Data, buf.AsSpan(0, n)).Finish();
                    off += n;
                    _data += n;
                    end = off;
                }
                at = hole;
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
        if (end != size) _w.Begin(SendCommand.Truncate).Path(SendAttr.Path, p).U64(SendAttr.Size, c.Size).Finish();
    }
}
