// pgjdbc through pgfleet with target_session_attrs = auto: each worker, on
// its own connection in autocommit, INSERTs a unique row and at once SELECTs
// it by id, `iterations` times, with PreparedStatements (prepareThreshold as
// given: with 1 every execution after the first is a named server-side
// statement, with the default 5 the first four are unnamed).  A read that
// does not find the row the same connection just wrote is a miss.
//
// Compiled with PgjdbcPrepared.java (its JSON helpers) and run by
// tests/integration/test_routing.py:
//   java -cp DIR:/usr/share/java/postgresql.jar PgjdbcRyw \
//        JDBC_URL USER PASSWORD WORKERS ITERATIONS BASE PREPARE_THRESHOLD
// Prints one JSON object on stdout: {"pairs": N, "missed": N, "misses": [...],
// "errors": [...], "pods": {"pod1": N, ...}, "server_prepared": N}.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;

public class PgjdbcRyw {
    static final List<String> misses = Collections.synchronizedList(new ArrayList<>());
    static final List<String> errors = Collections.synchronizedList(new ArrayList<>());
    static final Map<String, Long> pods = Collections.synchronizedMap(new TreeMap<>());
    static final AtomicLong pairs = new AtomicLong();
    static final AtomicLong missed = new AtomicLong();
    static final AtomicLong serverPrepared = new AtomicLong();

    static final String WRITE = "INSERT INTO ryw_rows (id, app) VALUES (?, ?)";
    static final String READ = "SELECT s.setting AS pod, r.id FROM pg_settings s "
        + "LEFT JOIN ryw_rows r ON r.id = ? WHERE s.name = 'cluster_name'";

    static void work(String url, Properties props, int worker, int iterations, int base) {
        try (Connection c = DriverManager.getConnection(url, props)) {
            c.setAutoCommit(true);
            PreparedStatement write = c.prepareStatement(WRITE);
            PreparedStatement read = c.prepareStatement(READ);
            for (int i = 0; i < iterations; i++) {
                int id = base + worker * 100000 + i;
                write.setInt(1, id);
                write.setString(2, "jdbc");
                write.executeUpdate();
                read.setInt(1, id);
                try (ResultSet rs = read.executeQuery()) {
                    rs.next();
                    String pod = rs.getString(1);
                    int got = rs.getInt(2);
                    boolean none = rs.wasNull();
                    pairs.incrementAndGet();
                    pods.merge(pod, 1L, Long::sum);
                    if (none || got != id) {
                        missed.incrementAndGet();
                        misses.add("id " + id + " not seen on " + pod);
                    }
                }
            }
            for (PreparedStatement ps : new PreparedStatement[] {write, read}) {
                if (ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare())
                    serverPrepared.incrementAndGet();
                ps.close();
            }
        } catch (SQLException e) {
            errors.add("worker " + worker + ": " + e.getSQLState() + " " + e.getMessage());
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        int workers = Integer.parseInt(args[3]);
        int iterations = Integer.parseInt(args[4]);
        int base = Integer.parseInt(args[5]);
        if (!args[6].equals("default")) props.setProperty("prepareThreshold", args[6]);
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < workers; w++) {
            final int worker = w;
            Thread th = new Thread(() -> work(url, props, worker, iterations, base));
            th.start();
            threads.add(th);
        }
        for (Thread th : threads) th.join();
        StringBuilder p = new StringBuilder("{");
        synchronized (pods) {
            boolean first = true;
            for (Map.Entry<String, Long> e : pods.entrySet()) {
                if (!first) p.append(", ");
                first = false;
                p.append(PgjdbcPrepared.esc(e.getKey())).append(": ").append(e.getValue());
            }
        }
        p.append('}');
        System.out.println("{\"pairs\": " + pairs.get()
            + ", \"missed\": " + missed.get()
            + ", \"misses\": " + PgjdbcPrepared.list(misses)
            + ", \"errors\": " + PgjdbcPrepared.list(errors)
            + ", \"pods\": " + p
            + ", \"server_prepared\": " + serverPrepared.get() + "}");
    }
}
