package dev.attribution;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilder;
import org.neo4j.harness.Neo4jBuilders;

/**
 * Development / test Neo4j server: neo4j-harness in-process, Bolt only, fixed port, fixed data
 * directory (data survives restarts), optional password.
 *
 * <pre>
 * java -Xmx1g -jar target/neo4j-dev.jar \
 *     --port 7697 --data /path/to/data [--password secret] [--pagecache 256m] [--tx-memory 512m]
 * </pre>
 * (equivalently {@code -cp 'target/classes:target/lib/*' dev.attribution.Launcher ...}).
 *
 * <p>Prints exactly one line on stdout once Bolt accepts connections: {@code READY bolt://127.0.0.1:PORT}.
 * With {@code --smoke-test} it instead runs a few queries, prints {@code SMOKE OK ...} and exits 0.
 * Everything else (diagnostics, errors) goes to stderr. Exit status 1 if the server cannot start,
 * 2 on bad arguments. SIGTERM / SIGINT close the database cleanly.
 */
public final class Launcher {
    private static final Pattern HARNESS_FOLDER = Pattern.compile("[0-9a-f]{32}");
    private static final String HOST = "127.0.0.1";

    private Launcher() {}

    public static void main(String[] args) {
        Options opts;
        try {
            opts = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("neo4j-dev: " + e.getMessage());
            System.err.println(Options.USAGE);
            System.exit(2);
            return;
        }
        try {
            run(opts);
        } catch (Throwable t) {
            System.err.println("neo4j-dev: FAILED to start: " + t);
            t.printStackTrace(System.err);
            System.err.flush();
            // runs the shutdown hook (clean close) if the database was already up
            System.exit(1);
        }
    }

    private static void run(Options opts) throws Exception {
        Path data = opts.data.toAbsolutePath().normalize();
        Path state = data.getParent() != null ? data.getParent() : data;
        Path work = state.resolve("harness");
        Path logs = state.resolve("logs");
        Files.createDirectories(data);
        Files.createDirectories(work);
        Files.createDirectories(logs);
        removeStaleHarnessFolders(work);

        long maxHeap = Runtime.getRuntime().maxMemory();
        long txMemory = opts.txMemory != null ? opts.txMemory : Math.max(64L << 20, maxHeap / 2);

        Neo4jBuilder builder = Neo4jBuilders.newInProcessBuilder(work)
                .withDisabledServer()
                .withConfig(BoltConnector.enabled, true)
                .withConfig(BoltConnector.listen_address, new SocketAddress(HOST, opts.port))
                // the defaults wait 5 s each on shutdown; a dev server should stop promptly
                .withConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofSeconds(1))
                .withConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofSeconds(1))
                .withConfig(GraphDatabaseSettings.data_directory, data)
                .withConfig(GraphDatabaseSettings.logs_directory, logs)
                .withConfig(GraphDatabaseSettings.pagecache_memory, opts.pagecache)
                .withConfig(GraphDatabaseSettings.memory_transaction_global_max_size, txMemory)
                .withConfig(GraphDatabaseSettings.keep_logical_logs, "128M size")
                .withConfig(GraphDatabaseSettings.logical_log_rotation_threshold, 64L << 20)
                .withConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .withConfig(GraphDatabaseSettings.udc_enabled, false)
                .withConfig(GraphDatabaseSettings.auth_enabled, opts.password != null)
                // a dev/test server: allow short passwords such as "test"
                .withConfig(GraphDatabaseSettings.auth_minimum_password_length, 1);

        long t0 = System.nanoTime();
        Neo4j neo4j = builder.build();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.err.println("neo4j-dev: shutting down");
            try {
                neo4j.close();
            } catch (Throwable t) {
                System.err.println("neo4j-dev: error during shutdown: " + t);
            } finally {
                System.err.println("neo4j-dev: stopped");
                System.err.flush();
                stopped.countDown();
            }
        }, "neo4j-dev-shutdown"));

        if (opts.watchPid > 0) {
            watch(opts.watchPid);
        }
        if (opts.password != null) {
            setPassword(neo4j, opts.password);
        }

        int port = neo4j.boltURI().getPort();
        System.err.printf("neo4j-dev: started in %d ms (data %s, heap max %d MiB, pagecache %d MiB,"
                        + " tx memory %d MiB, auth %s)%n",
                (System.nanoTime() - t0) / 1_000_000, data, maxHeap >> 20, opts.pagecache >> 20,
                txMemory >> 20, opts.password != null ? "on" : "off");

        if (opts.smokeTest) {
            smokeTest(neo4j);
            System.out.println("SMOKE OK bolt://" + HOST + ":" + port);
            System.out.flush();
            System.exit(0); // runs the shutdown hook (close)
        }

        PrintStream out = System.out;
        out.println("READY bolt://" + HOST + ":" + port);
        out.flush();

        // Block until the JVM is asked to exit; the shutdown hook closes the database.
        stopped.await();
    }

    /** Shut down (cleanly) when the given process exits, e.g. a test runner that was killed. */
    private static void watch(long pid) {
        Runnable bye = () -> {
            System.err.println("neo4j-dev: watched process " + pid + " is gone; shutting down");
            System.err.flush();
            System.exit(0);
        };
        ProcessHandle.of(pid).ifPresentOrElse(ph -> ph.onExit().thenRun(bye), bye);
    }

    /** Exercise the write/read/schema paths once (also loads their classes for a CDS archive). */
    private static void smokeTest(Neo4j neo4j) {
        var db = neo4j.defaultDatabaseService();
        db.executeTransactionally(
                "CREATE CONSTRAINT smoke_id IF NOT EXISTS FOR (n:SmokeTest) REQUIRE n.id IS UNIQUE");
        db.executeTransactionally(
                "UNWIND $rows AS row MERGE (a:SmokeTest {id: row.id}) SET a.v = row.v"
                        + " MERGE (b:SmokeTest {id: row.id + 1000}) MERGE (a)-[:SMOKE]->(b)",
                Map.of("rows", java.util.List.of(Map.of("id", 1, "v", "x"), Map.of("id", 2, "v", "y"))));
        long n = db.executeTransactionally(
                "MATCH (a:SmokeTest)-[r:SMOKE]->(b) RETURN count(r) AS c", Map.of(),
                r -> (Long) r.next().get("c"));
        if (n != 2) {
            throw new IllegalStateException("smoke test: expected 2 relationships, got " + n);
        }
        db.executeTransactionally("MATCH (n:SmokeTest) DETACH DELETE n");
        db.executeTransactionally("DROP CONSTRAINT smoke_id IF EXISTS");
    }

    private static void setPassword(Neo4j neo4j, String password) {
        var system = neo4j.databaseManagementService().database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        try {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $p CHANGE NOT REQUIRED", Map.of("p", password));
        } catch (RuntimeException e) {
            // Restart on an existing store with the same password: Neo4j refuses to "change" it.
            String msg = String.valueOf(e.getMessage()) + " " + String.valueOf(e.getCause());
            if (!msg.contains("cannot be the same")) {
                throw e;
            }
            // It may still be flagged "change required" if an earlier run set it differently.
            system.executeTransactionally("ALTER USER neo4j SET PASSWORD CHANGE NOT REQUIRED");
        }
    }

    /** Harness folders (md5-named) left behind by a killed JVM; close() deletes its own one. */
    private static void removeStaleHarnessFolders(Path work) throws IOException {
        try (Stream<Path> children = Files.list(work)) {
            for (Path child : (Iterable<Path>) children::iterator) {
                if (Files.isDirectory(child) && HARNESS_FOLDER.matcher(child.getFileName().toString()).matches()) {
                    try (Stream<Path> walk = Files.walk(child)) {
                        walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
                    }
                }
            }
        }
    }

    private static final class Options {
        static final String USAGE = "usage: Launcher --port N --data DIR [--password P]"
                + " [--pagecache SIZE] [--tx-memory SIZE] [--watch-pid PID] [--smoke-test]"
                + "   (SIZE like 256m, 1g; port 0 = any free port; password also from env"
                + " NEO4J_DEV_PASSWORD; --watch-pid: shut down when that process exits)";

        int port = 7697;
        Path data;
        String password;
        long pagecache = 256L << 20;
        Long txMemory;
        boolean smokeTest;
        long watchPid;

        static Options parse(String[] args) {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (a.equals("-h") || a.equals("--help")) {
                    System.out.println(USAGE);
                    System.exit(0);
                }
                if (a.equals("--smoke-test")) {
                    o.smokeTest = true;
                    continue;
                }
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("missing value for " + a);
                }
                String v = args[++i];
                switch (a) {
                    case "--port" -> o.port = parsePort(v);
                    case "--data" -> o.data = Path.of(v);
                    case "--password" -> o.password = v.isEmpty() ? null : v;
                    case "--pagecache" -> o.pagecache = parseSize(v);
                    case "--tx-memory" -> o.txMemory = parseSize(v);
                    case "--watch-pid" -> o.watchPid = parsePid(v);
                    default -> throw new IllegalArgumentException("unknown option " + a);
                }
            }
            if (o.data == null) {
                throw new IllegalArgumentException("--data DIR is required");
            }
            if (o.password == null) {
                String env = System.getenv("NEO4J_DEV_PASSWORD");
                if (env != null && !env.isEmpty()) {
                    o.password = env;
                }
            }
            return o;
        }

        static int parsePort(String v) {
            try {
                int p = Integer.parseInt(v);
                if (p < 0 || p > 65535) {
                    throw new IllegalArgumentException("port out of range: " + v);
                }
                return p;
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("bad port: " + v);
            }
        }

        static long parsePid(String v) {
            try {
                return Long.parseLong(v);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("bad pid: " + v);
            }
        }

        static long parseSize(String v) {
            String s = v.trim().toLowerCase();
            long mult = 1;
            char last = s.isEmpty() ? ' ' : s.charAt(s.length() - 1);
            switch (last) {
                case 'k' -> mult = 1L << 10;
                case 'm' -> mult = 1L << 20;
                case 'g' -> mult = 1L << 30;
                default -> mult = 1;
            }
            if (mult != 1) {
                s = s.substring(0, s.length() - 1);
            }
            try {
                return Long.parseLong(s) * mult;
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("bad size: " + v);
            }
        }
    }
}
