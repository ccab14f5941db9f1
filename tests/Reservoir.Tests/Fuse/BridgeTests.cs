using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Fuse.Bridge;
using Reservoir.Fuse.Protocol;
using Reservoir.Fuse.Session;
using Xunit;

namespace Reservoir.Tests.Fuse;

/// <summary>
/// The FUSE bridge driven with requests built byte by byte, as the kernel writes them
/// (include/uapi/linux/fuse.h), over an engine on a memory device: replies are read back as
/// the kernel would read them. No /dev/fuse needed. Requests carry pid 0, so the daemon's
/// permission checks see no supplementary groups and no capabilities (/proc is not read).
/// </summary>
public class BridgeTests : IDisposable
{
    private const ulong Root = 1;
    private const uint User = 1000, Other = 1001;
    private readonly Filesystem _fs = TestFs.Mount(TestFs.NewDevice());
    private readonly byte[] _out = new byte[1 << 16];
    private ulong _unique;

    public void Dispose() => _fs.Dispose();

    private FuseBridge Bridge(bool defaultPermissions = false)
    {
        var b = new FuseBridge(_fs, new FuseMountOptions { DefaultPermissions = defaultPermissions }, _ => { });
        var (err, body) = Send(b, Opcode.Init, 0, 0, 0, U32(7), U32(38), U32(128 << 10), U32(0));
        Assert.Equal(0, err);
        Assert.Equal(7u, BinaryPrimitives.ReadUInt32LittleEndian(body));
        return b;
    }

    private static byte[] U32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); return b; }
    private static byte[] U64(ulong v) { var b = new byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); return b; }
    private static byte[] Name(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    /// <summary>A request as the kernel writes it: fuse_in_header (len, opcode, unique, nodeid,
    /// uid, gid, pid, padding), then the body.</summary>
    internal static byte[] Request(Opcode op, ulong unique, ulong node, uint uid, uint gid, byte[] body)
    {
        var msg = new byte[Abi.InHeaderSize + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(msg, (uint)msg.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(msg.AsSpan(4), (uint)op);
        BinaryPrimitives.WriteUInt64LittleEndian(msg.AsSpan(8), unique);
        BinaryPrimitives.WriteUInt64LittleEndian(msg.AsSpan(16), node);
        BinaryPrimitives.WriteUInt32LittleEndian(msg.AsSpan(24), uid);
        BinaryPrimitives.WriteUInt32LittleEndian(msg.AsSpan(28), gid);
        body.CopyTo(msg, Abi.InHeaderSize);
        return msg;
    }

    /// <summary>Sends a request; returns the reply's error (negative errno, as on the wire) and
    /// its body.</summary>
    private (int Error, byte[] Body) Send(FuseBridge b, Opcode op, ulong node, uint uid, uint gid, params byte[][] parts)
    {
        int len = b.Handle(Request(op, ++_unique, node, uid, gid, parts.SelectMany(p => p).ToArray()), _out);
        Assert.True(len >= Abi.OutHeaderSize, $"{op}: no reply");
        Assert.Equal((uint)len, BinaryPrimitives.ReadUInt32LittleEndian(_out));
        Assert.Equal(_unique, BinaryPrimitives.ReadUInt64LittleEndian(_out.AsSpan(8)));
        return (BinaryPrimitives.ReadInt32LittleEndian(_out.AsSpan(4)), _out[Abi.OutHeaderSize..len]);
    }

    /// <summary>fuse_entry_out: node id, generation, entry_valid, attr_valid, …, attr (mode at 60+40).</summary>
    private static (ulong Node, ulong EntryValid, uint Mode, uint Uid, uint Gid) Entry(byte[] body) => (
        BinaryPrimitives.ReadUInt64LittleEndian(body), BinaryPrimitives.ReadUInt64LittleEndian(body.AsSpan(16)),
        BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(40 + 60)), BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(40 + 68)),
        BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(40 + 72)));

    private ulong Mkdir(FuseBridge b, ulong parent, string name, uint mode, uint uid = 0, uint gid = 0)
    {
        var (err, body) = Send(b, Opcode.Mkdir, parent, uid, gid, U32(mode), U32(0), Name(name));
        Assert.Equal(0, err);
        return Entry(body).Node;
    }

    private (int Error, byte[] Body) Create(FuseBridge b, ulong parent, string name, uint mode, uint uid, uint gid) =>
        Send(b, Opcode.Create, parent, uid, gid, U32(0x41 /* O_WRONLY|O_CREAT */), U32(0x8000 | mode), U32(0), U32(0), Name(name));

    /// <summary>fuse_setattr_in (88 bytes): valid, then mode at 68, uid at 76, gid at 80.</summary>
    private static byte[] SetattrIn(uint valid, uint mode = 0, uint uid = 0, uint gid = 0)
    {
        var s = new byte[88];
        BinaryPrimitives.WriteUInt32LittleEndian(s, valid);
        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(68), mode);
        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(76), uid);
        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(80), gid);
        return s;
    }

    [Fact]
    public void BadInputGetsAClearAnswerAndNoCrash()
    {
        var b = new FuseBridge(_fs, new FuseMountOptions(), _ => { });
        // Anything before INIT: EIO.
        Assert.Equal(-(int)Errno.EIO, Send(b, Opcode.Getattr, Root, 0, 0, new byte[16]).Error);
        b = Bridge();
        // A name without its NUL, a struct shorter than the opcode's: EINVAL.
        Assert.Equal(-(int)Errno.EINVAL, Send(b, Opcode.Lookup, Root, 0, 0, "abc"u8.ToArray()).Error);
        Assert.Equal(-(int)Errno.EINVAL, Send(b, Opcode.Mkdir, Root, 0, 0, U32(0x1ed)).Error);
        // A header whose length disagrees with the message: EINVAL, never a throw.
        var msg = new byte[Abi.InHeaderSize];
        BinaryPrimitives.WriteUInt32LittleEndian(msg, 999);
        BinaryPrimitives.WriteUInt32LittleEndian(msg.AsSpan(4), (uint)Opcode.Getattr);
        int len = b.Handle(msg, _out);
        Assert.Equal(Abi.OutHeaderSize, len);
        Assert.Equal(-(int)Errno.EINVAL, BinaryPrimitives.ReadInt32LittleEndian(_out.AsSpan(4)));
        // An opcode nobody knows: ENOSYS. So is INTERRUPT (the kernel then stops sending them).
        Assert.Equal(-(int)Errno.ENOSYS, Send(b, (Opcode)999, Root, 0, 0).Error);
        Assert.Equal(-(int)Errno.ENOSYS, Send(b, Opcode.Interrupt, 0, 0, 0, U64(5)).Error);
    }

    [Fact]
    public void SearchPermissionIsCheckedAndNamesInUnsearchableDirectoriesAreNotCached()
    {
        var b = Bridge();
        ulong priv = Mkdir(b, Root, "priv", 0x1c0);   // 0700, root's
        ulong pub = Mkdir(b, Root, "pub", 0x1ed);     // 0755
        Assert.Equal(0, Create(b, priv, "f", 0x1a4, 0, 0).Error);
        Assert.Equal(0, Create(b, pub, "g", 0x1a4, 0, 0).Error);
        // Root finds priv/f, but the kernel must ask again next time (timeout 0): another
        // caller's walk through priv must come back to the daemon.
        var (err, body) = Send(b, Opcode.Lookup, priv, 0, 0, Name("f"));
        Assert.Equal(0, err);
        Assert.Equal(0UL, Entry(body).EntryValid);
        (err, body) = Send(b, Opcode.Lookup, pub, 0, 0, Name("g"));
        Assert.Equal(0, err);
        Assert.Equal(1UL, Entry(body).EntryValid);
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Lookup, priv, User, User, Name("f")).Error);
        Assert.Equal(0, Send(b, Opcode.Lookup, pub, User, User, Name("g")).Error);
        // opendir needs read; access(2) answers by the caller's class.
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Opendir, priv, User, User, U32(0), U32(0)).Error);
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Access, priv, User, User, U32(1), U32(0)).Error);
        Assert.Equal(0, Send(b, Opcode.Access, pub, User, User, U32(5), U32(0)).Error);
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Access, pub, User, User, U32(2), U32(0)).Error);
        // With default_permissions the kernel checks: the daemon lets the request through.
        var k = Bridge(defaultPermissions: true);
        (err, body) = Send(k, Opcode.Lookup, priv, User, User, Name("f"));
        Assert.Equal(0, err);
        Assert.Equal(1UL, Entry(body).EntryValid);
    }

    [Fact]
    public void CreateUnlinkAndRenameFollowTheDirectoryAndStickyRules()
    {
        var b = Bridge();
        ulong ro = Mkdir(b, Root, "ro", 0x1ed);        // 0755, root's
        ulong tmp = Mkdir(b, Root, "tmp", 0x3ff);      // 1777
        Assert.Equal(-(int)Errno.EACCES, Create(b, ro, "x", 0x1a4, User, User).Error);
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Mkdir, ro, User, User, U32(0x1ed), U32(0), Name("d")).Error);
        Assert.Equal(0, Create(b, tmp, "mine", 0x1a4, User, User).Error);
        Assert.Equal(0, Create(b, tmp, "theirs", 0x1a4, Other, Other).Error);
        Assert.Equal(0, Create(b, ro, "f", 0x1a4, 0, 0).Error);
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Unlink, ro, User, User, Name("f")).Error);
        Assert.Equal(-(int)Errno.EPERM, Send(b, Opcode.Unlink, tmp, User, User, Name("theirs")).Error);
        Assert.Equal(-(int)Errno.EPERM, Send(b, Opcode.Rename, tmp, User, User, U64(tmp), Name("theirs"), Name("stolen")).Error);
        Assert.Equal(-(int)Errno.EPERM, Send(b, Opcode.Rename, tmp, User, User, U64(tmp), Name("mine"), Name("theirs")).Error);
        Assert.Equal(0, Send(b, Opcode.Rename, tmp, User, User, U64(tmp), Name("mine"), Name("mine2")).Error);
        Assert.Equal(0, Send(b, Opcode.Unlink, tmp, User, User, Name("mine2")).Error);
        Assert.Equal(0, Send(b, Opcode.Unlink, tmp, 0, 0, Name("theirs")).Error);
        Assert.Equal(0, Send(b, Opcode.Unlink, ro, 0, 0, Name("f")).Error);
    }

    [Fact]
    public void SetattrChecksOwnershipAndOpenChecksTheAccessMode()
    {
        var b = Bridge();
        ulong tmp = Mkdir(b, Root, "tmp", 0x3ff);
        var (err, body) = Create(b, tmp, "f", 0x1c9, User, User); // 0711, the user's
        Assert.Equal(0, err);
        ulong f = Entry(body).Node;
        Assert.Equal((User, User), (Entry(body).Uid, Entry(body).Gid));
        Assert.Equal(-(int)Errno.EPERM, Send(b, Opcode.Setattr, f, Other, Other, SetattrIn(Abi.FattrMode, mode: 0x1ff)).Error);
        Assert.Equal(-(int)Errno.EPERM, Send(b, Opcode.Setattr, f, User, User, SetattrIn(Abi.FattrUid, uid: Other)).Error);
        Assert.Equal(0, Send(b, Opcode.Setattr, f, User, User, SetattrIn(Abi.FattrUid, uid: User)).Error);
        // Another user may execute (open with __FMODE_EXEC) but not read a 0711 file.
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Open, f, Other, Other, U32(0), U32(0)).Error);
        Assert.Equal(0, Send(b, Opcode.Open, f, Other, Other, U32(0x20), U32(0)).Error);
        Assert.Equal(-(int)Errno.EACCES, Send(b, Opcode.Open, f, Other, Other, U32(1), U32(0)).Error);
        // The owner's chmod keeps set-group-ID only in the file's group (pid 0: no other groups).
        Assert.Equal(0, Send(b, Opcode.Setattr, f, 0, 0, SetattrIn(Abi.FattrGid, gid: 2000)).Error);
        (err, body) = Send(b, Opcode.Setattr, f, User, User, SetattrIn(Abi.FattrMode, mode: 0x5ed)); // 02755
        Assert.Equal(0, err);
        Assert.Equal(0x1edu, BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(16 + 60)) & 0xfff);
    }

    [Fact]
    public void CreateInASetGroupIdDirectoryTakesTheDirectorysGroup()
    {
        var b = Bridge();
        ulong d = Mkdir(b, Root, "shared", 0x5ff); // 02777
        Assert.Equal(0, Send(b, Opcode.Setattr, d, 0, 0, SetattrIn(Abi.FattrGid, gid: 2000)).Error);
        var (err, body) = Create(b, d, "f", 0x1a4, User, User);
        Assert.Equal(0, err);
        Assert.Equal((User, 2000u), (Entry(body).Uid, Entry(body).Gid));
    }

    [Fact]
    public void ProcStatusGivesGroupsAndCapabilities()
    {
        const string status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGroups:\t27 2000 \nCapInh:\t0000000000000000\nCapEff:\t0000000000000006\n";
        Assert.True(ProcStatus.Groups(status, 2000));
        Assert.False(ProcStatus.Groups(status, 200));
        Assert.False(ProcStatus.Groups("Groups:\n", 27));
        Assert.Null(ProcStatus.Groups("Name:\tx\n", 27));
        Assert.Equal(6UL, ProcStatus.Capabilities(status)); // CAP_DAC_OVERRIDE | CAP_DAC_READ_SEARCH
        Assert.Null(ProcStatus.Capabilities("Name:\tx\n"));
    }

    [Fact]
    public void OnlyTheCallersClassCountsAndUnreadableGroupsGrantOnlyWhatBothClassesGrant()
    {
        var file = new InodeAttr(300, 0x8000 | 0x184, 1, User, 2000, 0, 0, 0, 4096, default, default, default, default, 0, 0); // 0604
        var owner = new Caller(User, User, 0);
        var stranger = new Caller(Other, Other, 0);          // pid 0: groups unknown
        var member = new Caller(Other, 2000, 0);             // primary group 2000
        Assert.True(PosixAccess.Allows(file, owner, PosixAccess.MayRead));   // owner: rw-
        Assert.False(PosixAccess.Allows(file, member, PosixAccess.MayRead)); // group: ---
        Assert.False(PosixAccess.Allows(file, stranger, PosixAccess.MayRead)); // unknown: group & other
        var exec = file with { Mode = 0x8000 | 0x1a4 };     // 0644: no class may execute
        Assert.False(PosixAccess.Allows(exec, new Caller(0, 0, 0), PosixAccess.MayExec));
        Assert.True(PosixAccess.Allows(exec, new Caller(0, 0, 0), PosixAccess.MayWrite));
    }

    /// <summary>fuse_ioctl_in (fh, flags, cmd, arg, in_size, out_size) on a directory
    /// (FUSE_IOCTL_DIR) and its input.</summary>
    private (int Error, byte[] Body) Ioctl(FuseBridge b, ulong node, uint uid, uint cmd, byte[] input, uint outSize = 0)
    {
        var io = new byte[32];
        BinaryPrimitives.WriteUInt32LittleEndian(io.AsSpan(8), 16);
        BinaryPrimitives.WriteUInt32LittleEndian(io.AsSpan(12), cmd);
        BinaryPrimitives.WriteUInt32LittleEndian(io.AsSpan(24), (uint)input.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(io.AsSpan(28), outSize);
        return Send(b, Opcode.Ioctl, node, uid, uid, io, input);
    }

    /// <summary>
    /// What btrfs leaves to CAP_SYS_ADMIN (deleting a subvolume, setting it read-only, recording
    /// a received UUID, quotas, the label) is root's on a mount the daemon serves as root
    /// (these tests run as root); the user the daemon runs as (an ordinary user's own mount) gets
    /// it too, which `MountTests.AnOrdinaryUserMountsThroughFusermount3` shows by a receive.
    /// Anyone else gets EPERM and changes nothing.
    /// </summary>
    [Fact]
    public void AdministeringTheFilesystemIsRootsOnARootMount()
    {
        var b = Bridge();
        var create = new byte[4096];
        Encoding.UTF8.GetBytes("sv").CopyTo(create, 8);
        Assert.Equal(0, Ioctl(b, Root, 0, FuseBridge.IocSubvolCreate, create).Error);
        var (le, lb) = Send(b, Opcode.Lookup, Root, 0, 0, Name("sv"));
        Assert.Equal(0, le);
        ulong sv = Entry(lb).Node;
        var label = new byte[256];
        "theirs"u8.CopyTo(label);
        var quota = new byte[24];
        quota[0] = 1; // enable
        var received = new byte[24];
        received[0] = 0xAB;
        foreach (var uid in new[] { User, Other })
        {
            Assert.Equal(-(int)Errno.EPERM, Ioctl(b, sv, uid, FuseBridge.IocSubvolSetRo, U64(1)).Error);
            Assert.Equal(-(int)Errno.EPERM, Ioctl(b, sv, uid, FuseBridge.IocSetReceived, received).Error);
            Assert.Equal(-(int)Errno.EPERM, Ioctl(b, Root, uid, FuseBridge.IocQuotaCtl, quota).Error);
            Assert.Equal(-(int)Errno.EPERM, Ioctl(b, Root, uid, FuseBridge.FsIocSetFsLabel, label).Error);
            Assert.Equal(-(int)Errno.EPERM, Ioctl(b, Root, uid, FuseBridge.IocSnapDestroy, create).Error);
        }
        Assert.False(_fs.QuotaEnabled);
        Assert.NotEqual("theirs", _fs.Label);
        Assert.Equal(Errno.OK, _fs.Lookup(Filesystem.RootIno, "sv", out _));
        Assert.Equal(0, Ioctl(b, Root, 0, FuseBridge.IocQuotaCtl, quota).Error);
        Assert.True(_fs.QuotaEnabled);
        Assert.Equal(0, Ioctl(b, Root, 0, FuseBridge.FsIocSetFsLabel, label).Error);
        Assert.Equal("theirs", _fs.Label);
        Assert.Equal(0, Ioctl(b, Root, 0, FuseBridge.IocSnapDestroy, create).Error);
        Assert.Equal(Errno.ENOENT, _fs.Lookup(Filesystem.RootIno, "sv", out _));
    }
}
