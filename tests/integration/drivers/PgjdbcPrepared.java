// pgjdbc through pgfleet: PreparedStatements executed more often than
// prepareThreshold (5), so the driver switches to named server-side
// statements ("S_1", ...), Parse'd once per connection and then only Bind'd,
// across many transactions on several connections at once.
//
// Compiled and run by tests/integration/test_drivers.py:
//   java -cp DIR:/usr/share/java/postgresql.jar PgjdbcPrepared \
//        JDBC_URL USER PASSWORD CONNECTIONS TRANSACTIONS
// Prints one JSON object on stdout: {"queries": N, "mismatches": [...],
// "errors": [...], "server_prepared": N, "backends": N, "sum": N}.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

public class PgjdbcPrepared {
    static final List<String> mismatches = Collections.synchronizedList(new ArrayList<>());
    static final List<String> errors = Collections.synchronizedList(new ArrayList<>());
    static final Set<String> backends = Collections.synchronizedSet(new HashSet<>());
    static final AtomicLong queries = new AtomicLong();
    static final AtomicLong serverPrepared = new AtomicLong();
    static final AtomicLong sum = new AtomicLong();

    static String esc(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static String list(List<String> l) {
        StringBuilder b = new StringBuilder("[");
        synchronized (l) {
            for (int i = 0; i < l.size() && i < 20; i++) {
                if (i > 0) b.append(',');
                b.append(esc(l.get(i)));
            }
        }
        return b.append(']').toString();
    }

    static void work(String url, Properties props, int worker, int transactions) {
        try (Connection c = DriverManager.getConnection(url, props)) {
            PreparedStatement mul = c.prepareStatement("SELECT ?::int * 3");
            PreparedStatement cat = c.prepareStatement("SELECT ?::text || '-' || ?::int");
            PreparedStatement where = c.prepareStatement(
                "SELECT inet_server_addr()::text || ':' || pg_backend_pid()");
            for (int t = 0; t < transactions; t++) {
                // Odd transactions explicit, even ones in autocommit.
                c.setAutoCommit(t % 2 == 0);
                for (int k = 0; k < 8; k++) {
                    int v = worker * 100000 + t * 100 + k;
                    mul.setInt(1, v);
                    try (ResultSet rs = mul.executeQuery()) {
                        rs.next();
                        int got = rs.getInt(1);
                        queries.incrementAndGet();
                        sum.addAndGet(got);
                        if (got != v * 3) mismatches.add("mul " + v + " -> " + got);
                    }
                    cat.setString(1, "w" + worker);
                    cat.setInt(2, v);
                    try (ResultSet rs = cat.executeQuery()) {
                        rs.next();
                        String got = rs.getString(1);
                        queries.incrementAndGet();
                        if (!got.equals("w" + worker + "-" + v))
                            mismatches.add("cat " + v + " -> " + got);
                    }
                }
                try (ResultSet rs = where.executeQuery()) {
                    rs.next();
                    backends.add(rs.getString(1));
                    queries.incrementAndGet();
                }
                if (!c.getAutoCommit()) c.commit();
            }
            for (PreparedStatement ps : new PreparedStatement[] {mul, cat, where}) {
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
        props.setProperty("prepareThreshold", "5");
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");
        int connections = Integer.parseInt(args[3]);
        int transactions = Integer.parseInt(args[4]);
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < connections; w++) {
            final int worker = w;
            Thread th = new Thread(() -> work(url, props, worker, transactions));
            th.start();
            threads.add(th);
        }
        for (Thread th : threads) th.join();
        System.out.println("{\"queries\": " + queries.get()
            + ", \"mismatches\": " + list(mismatches)
            + ", \"errors\": " + list(errors)
            + ", \"server_prepared\": " + serverPrepared.get()
            + ", \"backends\": " + backends.size()
            + ", \"sum\": " + sum.get() + "}");
    }
}
