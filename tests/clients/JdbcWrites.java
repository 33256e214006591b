// Writes the way Java services write: a prepared INSERT run 20 times at
// prepareThreshold 0, 1 and 5 (pgjdbc moves to a named server-side
// statement at the threshold), executeBatch, setArray, setObject with an
// OffsetDateTime, and autoCommit=false with commit, rollback and an error
// that aborts the transaction.
//
// Usage: java -cp postgresql.jar JdbcWrites.java PORT

import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;

public class JdbcWrites {
    static void check(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
    }

    static long count(Connection c, String where) throws SQLException {
        try (Statement s = c.createStatement();
                ResultSet rs = s.executeQuery("SELECT count(*) FROM jdbc_writes WHERE " + where)) {
            check(rs.next(), "a row");
            return rs.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String base = "jdbc:postgresql://127.0.0.1:" + args[0] + "/lookout?user=lookout";
        OffsetDateTime t0 = OffsetDateTime.of(2026, 1, 1, 0, 0, 0, 0, ZoneOffset.UTC);
        try (Connection admin = DriverManager.getConnection(base)) {
            try (Statement s = admin.createStatement()) {
                s.execute("CREATE TABLE jdbc_writes (ts TIMESTAMPTZ NOT NULL, model TEXT, v BIGINT)");
            }
            for (int threshold : new int[] {0, 1, 5}) {
                try (Connection c = DriverManager.getConnection(base + "&prepareThreshold=" + threshold)) {
                    String model = "t" + threshold;
                    try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_writes VALUES (?, ?, ?)")) {
                        for (int i = 0; i < 20; i++) {
                            ins.setObject(1, t0.plusSeconds(i));
                            ins.setString(2, model);
                            ins.setLong(3, i);
                            check(ins.executeUpdate() == 1, "one row inserted at run " + i);
                        }
                    }
                    try (PreparedStatement upd = c.prepareStatement("UPDATE jdbc_writes SET v = v + 100 WHERE model = ? AND v = ?")) {
                        for (int i = 0; i < 20; i++) {
                            upd.setString(1, model);
                            upd.setLong(2, i);
                            check(upd.executeUpdate() == 1, "one row updated at run " + i);
                        }
                    }
                    try (PreparedStatement del = c.prepareStatement("DELETE FROM jdbc_writes WHERE model = ? AND v = ?")) {
                        for (int i = 0; i < 20; i += 2) {
                            del.setString(1, model);
                            del.setLong(2, 100 + i);
                            check(del.executeUpdate() == 1, "one row deleted at run " + i);
                        }
                    }
                    check(count(c, "model = '" + model + "' AND v >= 100") == 10, "10 rows left at threshold " + threshold);
                }
            }

            // executeBatch.
            try (PreparedStatement ins = admin.prepareStatement("INSERT INTO jdbc_writes VALUES (?, ?, ?)")) {
                for (int i = 0; i < 50; i++) {
                    ins.setObject(1, t0.plusMinutes(i));
                    ins.setString(2, "batch");
                    ins.setLong(3, i);
                    ins.addBatch();
                }
                int[] done = ins.executeBatch();
                check(done.length == 50, "50 batch results");
                for (int n : done) {
                    check(n == 1 || n == Statement.SUCCESS_NO_INFO, "batch results " + java.util.Arrays.toString(done));
                }
            }
            check(count(admin, "model = 'batch'") == 50, "50 batch rows");

            // Generated keys: pgjdbc appends RETURNING * and reads the row back,
            // at every prepare threshold; an UPDATE ... RETURNING is a query.
            for (int threshold : new int[] {0, 1, 5}) {
                try (Connection c = DriverManager.getConnection(base + "&prepareThreshold=" + threshold);
                        PreparedStatement ins = c.prepareStatement(
                                "INSERT INTO jdbc_writes VALUES (?, ?, ?)", Statement.RETURN_GENERATED_KEYS)) {
                    for (int i = 0; i < 6; i++) {
                        ins.setObject(1, t0.plusMinutes(i));
                        ins.setString(2, "keys" + threshold);
                        ins.setLong(3, 1000 + i);
                        check(ins.executeUpdate() == 1, "one generated-keys insert at run " + i);
                        try (ResultSet keys = ins.getGeneratedKeys()) {
                            check(keys.next() && keys.getLong("v") == 1000 + i
                                    && ("keys" + threshold).equals(keys.getString("model")),
                                    "the generated keys are the inserted row at run " + i);
                            check(!keys.next(), "one generated row");
                        }
                    }
                }
            }
            try (PreparedStatement upd = admin.prepareStatement(
                    "UPDATE jdbc_writes SET v = v + 1 WHERE model = ? RETURNING v")) {
                upd.setString(1, "keys0");
                long sum = 0;
                try (ResultSet rs = upd.executeQuery()) {
                    while (rs.next()) {
                        sum += rs.getLong(1);
                    }
                }
                check(sum == 6 * 1000 + 15 + 6, "UPDATE ... RETURNING returns the new values, got " + sum);
            }

            // setArray: = ANY(?) with a text array and a bigint array.
            try (PreparedStatement q = admin.prepareStatement("SELECT count(*) FROM jdbc_writes WHERE model = ANY(?)")) {
                Array models = admin.createArrayOf("text", new String[] {"t0", "t1"});
                q.setArray(1, models);
                try (ResultSet rs = q.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == 20, "ANY(text[]) counts t0 and t1");
                }
            }
            try (PreparedStatement q = admin.prepareStatement("SELECT count(*) FROM jdbc_writes WHERE model = 'batch' AND v = ANY(?)")) {
                q.setArray(1, admin.createArrayOf("bigint", new Long[] {1L, 2L, 3L, 99L}));
                try (ResultSet rs = q.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == 3, "ANY(bigint[])");
                }
            }

            // setObject(OffsetDateTime) in a filter, through a named statement.
            try (Connection c = DriverManager.getConnection(base + "&prepareThreshold=1");
                    PreparedStatement q = c.prepareStatement("SELECT count(*) FROM jdbc_writes WHERE model = 'batch' AND ts >= ?")) {
                q.setObject(1, t0.plusMinutes(40));
                try (ResultSet rs = q.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == 10, "ts >= OffsetDateTime");
                }
            }

            // autoCommit=false: commit keeps, rollback discards, an error aborts.
            try (Connection c = DriverManager.getConnection(base)) {
                c.setAutoCommit(false);
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_writes VALUES (?, 'tx', ?)")) {
                    for (int i = 0; i < 5; i++) {
                        ins.setObject(1, t0.plusHours(i));
                        ins.setLong(2, i);
                        ins.executeUpdate();
                    }
                    check(count(c, "model = 'tx'") == 5, "the transaction sees its rows");
                    check(count(admin, "model = 'tx'") == 0, "others do not, before commit");
                    c.commit();
                    check(count(admin, "model = 'tx'") == 5, "committed rows are seen");

                    ins.setObject(1, t0.plusHours(9));
                    ins.setLong(2, 9);
                    ins.executeUpdate();
                    try (Statement s = c.createStatement()) {
                        s.executeUpdate("DELETE FROM jdbc_writes WHERE model = 'tx' AND v < 2");
                    }
                    check(count(c, "model = 'tx'") == 4, "the transaction sees its delete");
                    c.rollback();
                    check(count(admin, "model = 'tx'") == 5, "rollback discards the insert and the delete");

                    ins.setObject(1, t0.plusHours(10));
                    ins.setLong(2, 10);
                    ins.executeUpdate();
                    try (Statement s = c.createStatement()) {
                        s.executeQuery("SELECT 1 / 0");
                        check(false, "division by zero fails");
                    } catch (SQLException e) {
                        check("22012".equals(e.getSQLState()), "22012, got " + e.getSQLState());
                    }
                    try (Statement s = c.createStatement()) {
                        s.executeQuery("SELECT 1");
                        check(false, "an aborted transaction refuses statements");
                    } catch (SQLException e) {
                        check("25P02".equals(e.getSQLState()), "25P02, got " + e.getSQLState());
                    }
                    c.rollback();
                    check(count(admin, "model = 'tx'") == 5, "the aborted transaction left nothing");
                }
            }
        }
        System.out.println("pgjdbc writes: ok");
    }
}
