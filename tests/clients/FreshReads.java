// Every execution of a statement pgjdbc prepared on the server sees the data
// of that moment: readers with prepareThreshold=1 (a named server-side
// statement from the first run) and 5 (the default, from the fifth) run the
// same count after each 500-row batch a writer inserts, then after a delete.
//
// Usage: java -cp postgresql.jar FreshReads.java PORT

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class FreshReads {
    static void check(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
    }

    static long count(PreparedStatement ps) throws SQLException {
        ps.setLong(1, 0);
        try (ResultSet rs = ps.executeQuery()) {
            check(rs.next(), "a row");
            return rs.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String base = "jdbc:postgresql://127.0.0.1:" + args[0] + "/lookout?user=lookout";
        try (Connection writer = DriverManager.getConnection(base);
                Connection eager = DriverManager.getConnection(base + "&prepareThreshold=1");
                Connection usual = DriverManager.getConnection(base + "&prepareThreshold=5")) {
            try (Statement s = writer.createStatement()) {
                s.execute("CREATE TABLE fresh_jdbc (ts TIMESTAMPTZ NOT NULL, batch BIGINT, v BIGINT)");
            }
            String sql = "SELECT count(*) FROM fresh_jdbc WHERE batch >= ?";
            PreparedStatement[] readers = {eager.prepareStatement(sql), usual.prepareStatement(sql)};
            String[] names = {"prepareThreshold=1", "prepareThreshold=5"};
            for (int batch = 1; batch <= 8; batch++) {
                try (Statement s = writer.createStatement()) {
                    s.executeUpdate("INSERT INTO fresh_jdbc SELECT now(), " + batch
                            + ", v FROM generate_series(1, 500) AS g(v)");
                }
                for (int r = 0; r < readers.length; r++) {
                    for (int run = 0; run < 3; run++) {
                        long n = count(readers[r]);
                        check(n == 500L * batch, names[r] + ": after batch " + batch + " saw " + n);
                    }
                }
            }
            try (Statement s = writer.createStatement()) {
                s.executeUpdate("DELETE FROM fresh_jdbc WHERE batch <= 3");
            }
            for (int r = 0; r < readers.length; r++) {
                long n = count(readers[r]);
                check(n == 2500, names[r] + ": after the delete saw " + n);
            }
        }
        System.out.println("pgjdbc fresh reads ok");
    }
}
