import Testing
@testable import LinuxBlock

@Suite struct CommandTests {
    @Test func returnsStdoutWithoutAShell() throws {
        // No shell: the metacharacters reach printf as plain text.
        #expect(try Command.run(["printf", "%s|%s", "a b", "$HOME;"]) == "a b|$HOME;")
    }

    @Test func throwsStatusAndStderrTail() {
        do {
            _ = try Command.run(["ls", "/nonexistent/linuxblock-test"])
            Issue.record("ls of a missing path succeeded")
        } catch {
            #expect(error.status == 2)
            #expect(error.stderr.contains("/nonexistent/linuxblock-test"))
            #expect(error.argv == ["ls", "/nonexistent/linuxblock-test"])
        }
    }

    @Test func reportsAProgramThatCannotStart() {
        do {
            _ = try Command.run(["linuxblock-no-such-program"])
            Issue.record("a missing program ran")
        } catch {
            #expect(error.status == 127)
            #expect(error.stderr.contains("ENOENT"))
        }
    }

    @Test func drainsLargeOutputOnBothPipes() throws {
        // More than a pipe buffer (64 KiB) on stdout and stderr at once must not deadlock.
        let output = try Command.run(["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; head -c 300000 /dev/zero >&2"])
        #expect(output.utf8.count == 300_000)
    }
}
