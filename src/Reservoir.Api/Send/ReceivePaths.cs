using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>
/// Keeps a receive inside the subvolume it makes. A stream names paths, and may have made any
/// of their components a symbolic link first: `SYMLINK x -> /etc`, then `MKFILE x/passwd` would
/// write wherever the link points (on the host, through a mount, as root). So every directory
/// component of a path a command names must be a real directory, not a link (ELOOP otherwise),
/// and the targets open a file they write with O_NOFOLLOW. The directories already checked are
/// remembered until the next command that removes or renames a name.
/// </summary>
public sealed class ReceivePaths(Func<string, bool> isSymlink)
{
    private readonly HashSet<string> _checked = new(StringComparer.Ordinal);

    /// <summary>Throws unless no directory component of <paramref name="path"/> (relative to the
    /// subvolume's root) is a symbolic link.</summary>
    public void Check(string path)
    {
        for (int slash = path.IndexOf('/'); slash > 0; slash = path.IndexOf('/', slash + 1))
        {
            string dir = path[..slash];
            if (_checked.Contains(dir)) continue;
            if (isSymlink(dir))
                throw new FsException(Errno.ELOOP, $"receive: '{dir}' in '{path}' is a symbolic link: a stream may not reach through one");
            _checked.Add(dir);
        }
    }

    /// <summary>A name was removed or renamed: what was checked may have changed.</summary>
    public void Changed() => _checked.Clear();
}
