using System.Globalization;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// Who sent a request, as the kernel writes it in the request header: the caller's filesystem
/// uid and gid (fsuid, fsgid) and its thread id in the daemon's pid namespace. The header does
/// not carry supplementary groups; <see cref="InGroup"/> reads them from /proc only when a
/// decision depends on them (the caller is neither the owner nor in the file's primary group,
/// and the group and other bits differ), as libfuse's fuse_getgroups does, and its effective
/// capabilities only when a check would refuse a caller that is not root.
/// </summary>
internal readonly struct Caller(uint uid, uint gid, uint pid)
{
    public uint Uid { get; } = uid;
    public uint Gid { get; } = gid;
    public uint Pid { get; } = pid;

    /// <summary>uid 0 stands for the capabilities that go with it (CAP_DAC_OVERRIDE,
    /// CAP_FOWNER, CAP_CHOWN, CAP_FSETID) without reading them: the FUSE header does not
    /// carry capability sets, and reading them for every request of root would cost a /proc
    /// read each (libfuse's and fuse2fs's checks decide by uid 0 alone).</summary>
    public bool IsRoot => Uid == 0;

    public const int CapChown = 0, CapDacOverride = 1, CapDacReadSearch = 2, CapFowner = 3, CapFsetid = 4;

    /// <summary>Whether a caller that is not root holds an effective capability (a service
    /// given CAP_DAC_READ_SEARCH, a process that changed uid but kept its capabilities): asked
    /// only where the answer would otherwise be a refusal.</summary>
    public bool HasCapability(int cap) => IsRoot || ProcStatus.EffectiveCapabilities(Pid) is ulong caps && (caps & (1UL << cap)) != 0;

    /// <summary>True, false, or null when the caller's groups cannot be read (the thread has
    /// exited, or the daemon cannot see its pid namespace); callers then grant only what both
    /// answers would.</summary>
    public bool? InGroup(uint group)
    {
        if (group == Gid) return true;
        return ProcStatus.InGroup(Pid, group);
    }
}

/// <summary>
/// Reads a thread's supplementary groups ("Groups:") and effective capabilities ("CapEff:")
/// from /proc/PID/task/PID/status. A request's pid is the calling thread's id; groups and
/// capabilities are per thread in the kernel (glibc keeps groups equal across a process), so
/// the task's own file is the right one. The caller is blocked in the request while the daemon
/// reads it, so the pid still names it (unless a fatal signal ends it meanwhile, when the answer
/// no longer reaches anyone). No cache: a pid can be reused once the request is over, and the
/// read is needed only for the rare decision that depends on it. A caller outside the daemon's
/// pid namespace comes with pid 0: no groups and no capabilities are assumed.
/// </summary>
internal static class ProcStatus
{
    public static bool? InGroup(uint pid, uint group) => Read(pid) is string s ? Groups(s, group) : null;

    public static ulong? EffectiveCapabilities(uint pid) => Read(pid) is string s ? Capabilities(s) : null;

    private static string? Read(uint pid)
    {
        if (pid == 0) return null;
        try { return File.ReadAllText($"/proc/{pid}/task/{pid}/status"); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>Whether the "Groups:" line of a status file lists <paramref name="group"/>;
    /// null when the line is missing.</summary>
    public static bool? Groups(ReadOnlySpan<char> status, uint group)
    {
        var line = Line(status, "Groups:");
        if (line.IsEmpty && !status.Contains("Groups:", StringComparison.Ordinal)) return null;
        foreach (var range in line.Split(' '))
        {
            var g = line[range].Trim();
            if (g.Length > 0 && uint.TryParse(g, NumberStyles.None, CultureInfo.InvariantCulture, out uint v) && v == group) return true;
        }
        return false;
    }

    /// <summary>The "CapEff:" mask (hexadecimal), or null when missing.</summary>
    public static ulong? Capabilities(ReadOnlySpan<char> status) =>
        ulong.TryParse(Line(status, "CapEff:").Trim(), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong v) ? v : null;

    private static ReadOnlySpan<char> Line(ReadOnlySpan<char> status, string key)
    {
        foreach (var line in status.EnumerateLines())
            if (line.StartsWith(key, StringComparison.Ordinal)) return line[key.Length..];
        return default;
    }
}
